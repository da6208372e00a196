//! The `sql` tool server's entry point: MCP over stdin/stdout.

fn main() {
    sql::server().serve(sql::call);
}
