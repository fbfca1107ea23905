//! The README quotes the examples: each block after an
//! `<!-- example: PATH -->` marker must be that file, byte for byte, so the
//! README never shows code that is not built and run by the tests.

use std::path::Path;

#[test]
fn readme_examples_are_the_example_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut found = 0;
    let mut rest = readme.as_str();
    while let Some(i) = rest.find("<!-- example: ") {
        rest = &rest[i + "<!-- example: ".len()..];
        let end = rest.find(" -->").expect("unterminated example marker");
        let path = &rest[..end];
        rest = &rest[end..];
        let fence = rest.find("\n```").expect("no code block after the marker");
        let body_start = rest[fence + 4..].find('\n').unwrap() + fence + 5;
        let body_len = rest[body_start..]
            .find("```\n")
            .expect("unterminated code block");
        let body = &rest[body_start..body_start + body_len];
        let file = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("README quotes {path}: {e}"));
        assert_eq!(body, file, "README's copy of {path} differs from the file");
        found += 1;
        rest = &rest[body_start + body_len..];
    }
    assert!(
        found >= 3,
        "expected the C, C++ and Python examples, found {found}"
    );
}
