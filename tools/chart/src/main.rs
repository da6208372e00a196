//! The `chart` tool server's entry point: MCP over stdin/stdout.

fn main() {
    chart::server().serve(chart::call);
}
