//! The `json` tool server's entry point: MCP over stdin/stdout.

fn main() {
    json_tool::server().serve(json_tool::call);
}
