/* Publishes a shared closure, then maps its current version and reads it
 * in place (what any other process of the domain would do).
 *
 *   cc c_closure.c $(pkg-config --cflags --libs mtipc) -o c_closure
 *   ./c_closure [DOMAIN_DIR]     (default: the default domain)
 */
#include <mtipc.h>
#include <stdio.h>

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != MT_OK) goto fail;                                                            \
    } while (0)

int main(int argc, char **argv) {
    mt_domain *d = NULL;
    mt_closure_builder *b = NULL;
    mt_closure *c = NULL;
    uint64_t version = 0;
    TRY(mt_domain_open(argc > 1 ? argv[1] : NULL, &d));

    /* {"queue": "billing", "weight": 3}: keys in any order, stored sorted. */
    TRY(mt_closure_builder_new(&b));
    TRY(mt_closure_builder_begin_map(b));
    TRY(mt_closure_builder_key(b, "queue", 5));
    TRY(mt_closure_builder_add_str(b, "billing", 7));
    TRY(mt_closure_builder_key(b, "weight", 6));
    TRY(mt_closure_builder_add_int(b, 3));
    TRY(mt_closure_builder_end(b));
    TRY(mt_closure_publish(d, "routing", b, &version));

    /* Map the current version read-only; strings point into the mapping. */
    mt_value root, queue, weight;
    const char *name;
    size_t len;
    int64_t w;
    TRY(mt_closure_open(d, "routing", &c));
    TRY(mt_closure_root(c, &root));
    TRY(mt_value_map_get(root, "queue", 5, &queue));
    TRY(mt_value_str(queue, &name, &len)); /* NUL-terminated too */
    TRY(mt_value_map_get(root, "weight", 6, &weight));
    TRY(mt_value_int(weight, &w));
    printf("routing v%llu: queue %s, weight %lld\n", (unsigned long long)version, name,
           (long long)w);
    mt_closure_free(c); /* lets go of the version */
    mt_closure_builder_free(b);
    mt_domain_free(d);
    return 0;
fail:
    fprintf(stderr, "mtipc: %s\n", mt_last_error());
    mt_closure_free(c);
    mt_closure_builder_free(b);
    mt_domain_free(d);
    return 1;
}
