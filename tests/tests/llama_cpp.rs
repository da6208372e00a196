//! Opt-in, slow: the `openai` provider kind against a real third-party server, llama.cpp's
//! OpenAI-compatible server (from `llama-cpp-python`), running the same GGUF as the `local`
//! provider, with a forced tool call.
//!
//! ```sh
//! python3 -m venv /tmp/llamacpp && /tmp/llamacpp/bin/pip install "llama-cpp-python[server]"  # ~8 min
//! CAXTON_LLAMA_PYTHON=/tmp/llamacpp/bin/python cargo test -p caxton-tests --test llama_cpp -- --ignored
//! ```

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caxton_tests::{Daemon, Options};

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn model_path() -> std::path::PathBuf {
    let data = std::env::var_os("CAXTON_DATA_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME").map(|d| std::path::Path::new(&d).join("caxton"))
        })
        .unwrap_or_else(|| {
            std::path::Path::new(&std::env::var_os("HOME").expect("HOME"))
                .join(".local/share/caxton")
        });
    data.join("models").join(caxton_config::LOCAL_MODEL_FILE)
}

#[test]
#[ignore = "needs llama-cpp-python (CAXTON_LLAMA_PYTHON); see the module docs"]
fn the_openai_kind_drives_llama_cpp_server_through_a_forced_tool_call() {
    let python = std::env::var("CAXTON_LLAMA_PYTHON")
        .expect("set CAXTON_LLAMA_PYTHON to a python with llama-cpp-python[server] installed");
    let model = model_path();
    assert!(
        model.is_file(),
        "{} is missing: run scripts/setup.sh",
        model.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args([
                "--chat_format",
                "chatml-function-calling",
                "--host",
                "127.0.0.1",
            ])
            .args([
                "--port",
                &port.to_string(),
                "--n_threads",
                "2",
                "--n_ctx",
                "2048",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama_cpp.server"),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "llama_cpp.server did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let d = Daemon::start(Options {
        agents: vec!["tests/agents/llamacpp-calc.toml".into()],
        extra_config: format!(
            "\n[providers.llamacpp]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"smollm2\"\ntimeout = \"100s\"\n"
        ),
        ..Options::default()
    })
    .unwrap();
    let out = d.run("llamacpp-calc", "What is (2 + 3) * 7?").unwrap();
    let calls = out.tool_calls();
    eprintln!("tool calls: {calls:?}\nanswer: {:?}", out.answer());
    assert_eq!(calls.len(), 1, "{out:?}");
    assert_eq!(calls[0].1, "calculate");
    let args: serde_json::Value = serde_json::from_str(calls[0].2).expect("JSON arguments");
    assert!(args["expression"].is_string(), "{args}");
    assert!(
        out.answer().is_some_and(|a| !a.trim().is_empty()),
        "{out:?}"
    );
}
