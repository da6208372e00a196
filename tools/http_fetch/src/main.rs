//! The `http_fetch` tool server's entry point: MCP over stdin/stdout.

fn main() {
    http_fetch::server().serve(http_fetch::call);
}
