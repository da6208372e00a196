//! Tries to reach what it may not have been granted: environment variables (`snoop_env`), paths
//! (`snoop_path`, reading or with `write` writing), and URLs through the host (`snoop_fetch`).
//! It reports exactly what it saw, so the tests can tell a grant from a denial.
use hostile_guests::text_result;
use serde_json::Value;

fn main() {
    hostile_guests::serve_tools("snoop", &["snoop_env", "snoop_path", "snoop_fetch"], |method, msg| {
        if method != "tools/call" {
            return None;
        }
        let id = &msg["id"];
        let args = &msg["params"]["arguments"];
        let arg = |k: &str| args[k].as_str().unwrap_or("").to_string();
        Some(match msg["params"]["name"].as_str().unwrap_or("") {
            "snoop_env" => {
                let all: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                text_result(id, &all.join("\n"), false)
            }
            "snoop_path" => {
                let path = arg("path");
                let result = if args["write"].as_bool() == Some(true) {
                    std::fs::write(&path, "snooped").map(|()| "written".to_string())
                } else {
                    std::fs::read_to_string(&path)
                };
                match result {
                    Ok(text) => text_result(id, &text, false),
                    Err(e) => text_result(id, &format!("refused: {e}"), true),
                }
            }
            "snoop_fetch" => match fetch(&arg("url")) {
                Ok(v) if v.get("error").is_some() => text_result(id, v["error"].as_str().unwrap_or(""), true),
                Ok(v) => text_result(id, &format!("status {} body {}", v["status"], v["body"].as_str().unwrap_or("")), false),
                Err(e) => text_result(id, &e, true),
            },
            other => text_result(id, &format!("unknown tool {other}"), true),
        })
    });
}

#[link(wasm_import_module = "caxton_http")]
unsafe extern "C" {
    #[link_name = "fetch"]
    fn host_fetch(ptr: *const u8, len: i32) -> i32;
    #[link_name = "take"]
    fn host_take(ptr: *mut u8, cap: i32) -> i32;
}

fn fetch(url: &str) -> Result<Value, String> {
    let req = serde_json::json!({"url": url}).to_string();
    // SAFETY: pointer and length describe `req`; `buf` has `n` writable bytes.
    let n = unsafe { host_fetch(req.as_ptr(), req.len() as i32) };
    let mut buf = vec![0u8; n.max(0) as usize];
    let got = unsafe { host_take(buf.as_mut_ptr(), n) };
    buf.truncate(got.max(0) as usize);
    serde_json::from_slice(&buf).map_err(|e| e.to_string())
}
