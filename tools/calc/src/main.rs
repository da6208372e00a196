//! The `calc` tool server's entry point: MCP over stdin/stdout.

fn main() {
    calc::server().serve(calc::call);
}
