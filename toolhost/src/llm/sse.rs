//! Placeholder: server-sent events parsing (being written).
