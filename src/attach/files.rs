//! See docs/attach.md (being written).
