//! The `csv` tool server's entry point: MCP over stdin/stdout.

fn main() {
    csv_tool::server().serve(csv_tool::call);
}
