//! The `files` tool server's entry point: MCP over stdin/stdout.

fn main() {
    files::server().serve(files::call);
}
