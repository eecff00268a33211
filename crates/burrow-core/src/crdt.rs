//! CRDT text and list fields (loro). TODO(#4): being written.
