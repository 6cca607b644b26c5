//! The `talos-mcp` binary. The CLI and transports are not built yet; until they are, running it
//! says so and exits with an error rather than pretending to serve.

fn main() -> std::process::ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "talos-mcp: the MCP server is not built yet; this binary will serve MCP over stdio and HTTP \
             and run `talos-mcp demo` once the binary issue lands"
        );
    }
    std::process::ExitCode::FAILURE
}
