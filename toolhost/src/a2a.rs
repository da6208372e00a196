//! The A2A client: delegations to agents elsewhere (`[[delegation.remote]]` in an agent file),
//! sent on the supervisor's behalf. Only origins the operator granted in `[a2a] remotes` are
//! reached, through the same egress as guests' HTTP (`egress.rs`: the origin checked before the
//! request, the address after DNS, each redirect hop again); the bearer token for an origin is
//! read from the toolhost's environment (`token_env`), so it never leaves this process.
//!
//! One delegation: fetch the Agent Card, take its JSON-RPC 1.0 interface, `SendMessage` the
//! task (blocking until the task ends), and answer with the text of the task's artifacts (or its
//! final message). A task that fails, is cancelled, rejected, or asks for input is an error that
//! names its state and message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use caxton_config::ServerConfig;
use caxton_ipc::api::{ErrorBody, ErrorKind};
use caxton_ipc::error::Chain;
use caxton_ipc::toolhost::{A2aAnswer, A2aSendRequest};
use caxton_ipc::trace::TraceParent;
use serde_json::{Value, json};

use crate::egress::Egress;
use crate::policy::Origin;

/// The granted origins, and the token of each that has one.
pub struct Remotes {
    egress: Option<Arc<Egress>>,
    tokens: BTreeMap<String, String>,
}

fn error(message: String) -> ErrorBody {
    ErrorBody::new(ErrorKind::Delegation, message)
}

impl Remotes {
    /// From `[a2a] remotes`; an origin whose token variable is unset is still reached, without
    /// a token (the remote agent then answers 401, which the error names).
    pub fn from_config(config: &ServerConfig) -> Remotes {
        let mut origins = Vec::new();
        let mut tokens = BTreeMap::new();
        for r in &config.a2a.remotes {
            match Origin::parse(&r.origin) {
                Ok(mut o) => {
                    o.private = r.private;
                    if let Some(var) = &r.token_env {
                        match std::env::var(var) {
                            Ok(t) => {
                                tokens.insert(o.to_string(), t);
                            }
                            Err(_) => {
                                tracing::warn!(origin = %o, variable = %var, "the token variable of an A2A remote is not set; requests go without a token")
                            }
                        }
                    }
                    origins.push(o);
                }
                Err(e) => {
                    tracing::warn!(origin = %r.origin, error = %Chain(&e), "an A2A remote's origin is not usable")
                }
            }
        }
        let egress = match Egress::new("a2a", &origins) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "no A2A client: cannot build its HTTP client");
                None
            }
        };
        Remotes { egress, tokens }
    }

    /// Sends one delegation and waits for the remote task's end, within its deadline.
    pub async fn send(&self, req: &A2aSendRequest) -> Result<A2aAnswer, ErrorBody> {
        let deadline = Duration::from_millis(req.timeout_ms);
        match tokio::time::timeout(deadline, self.exchange(req, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(ErrorBody::new(
                ErrorKind::Timeout,
                format!(
                    "remote agent `{}` did not answer within {} ms",
                    req.remote, req.timeout_ms
                ),
            )),
        }
    }

    async fn exchange(
        &self,
        req: &A2aSendRequest,
        deadline: Duration,
    ) -> Result<A2aAnswer, ErrorBody> {
        let Some(egress) = &self.egress else {
            return Err(error(format!(
                "denied: remote agent `{}` ({}) is at an origin the operator has not granted; add it to [a2a] remotes in caxton.toml",
                req.remote, req.card
            )));
        };
        let card_url = url::Url::parse(&req.card)
            .map_err(|e| error(format!("the card URL `{}` is not a URL: {e}", req.card)))?;
        let card_origin = Origin::of(&card_url)
            .map_err(|e| error(format!("the card URL `{}`: {}", req.card, Chain(&e))))?;
        let token = self.tokens.get(&card_origin.to_string()).cloned();
        let mut headers = vec![("accept".to_string(), "application/json".to_string())];
        if let Some(t) = &token {
            headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        // Each request is a span under the delegating call, and carries its context.
        let trace = req.traceparent.as_deref().and_then(TraceParent::parse);
        let (status, body) = egress
            .exchange("GET", &card_url, &headers, None, deadline, trace)
            .await
            .map_err(|e| error(format!("remote agent `{}`: {}", req.remote, Chain(&e))))?;
        if status != 200 {
            return Err(error(format!(
                "remote agent `{}`: its card at {} answered HTTP {status}",
                req.remote, req.card
            )));
        }
        let card: Value = serde_json::from_str(&body).map_err(|e| {
            error(format!(
                "remote agent `{}`: its card is not JSON: {e}",
                req.remote
            ))
        })?;
        let url = card["supportedInterfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| {
                i["protocolBinding"] == "JSONRPC"
                    && i["protocolVersion"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("1."))
            })
            .and_then(|i| i["url"].as_str())
            .ok_or_else(|| {
                error(format!(
                    "remote agent `{}`: its card offers no JSON-RPC interface of A2A 1.x",
                    req.remote
                ))
            })?;
        let url = url::Url::parse(url).map_err(|e| {
            error(format!(
                "remote agent `{}`: its interface URL `{url}` is not a URL: {e}",
                req.remote
            ))
        })?;
        // The card cannot send the token (or the task) to another granted origin.
        if !Origin::of(&url).is_ok_and(|o| o.same(&card_origin)) {
            return Err(error(format!(
                "denied: remote agent `{}`'s card names an interface at {url}, not at its own origin {card_origin}",
                req.remote
            )));
        }
        let message_id = format!("{}-{}", req.run_id, req.call_id);
        let rpc = json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": {
                "messageId": message_id,
                "role": "ROLE_USER",
                "parts": [{"text": req.task}],
            }},
        });
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("a2a-version".into(), "1.0".into()));
        let (status, body) = egress
            .exchange(
                "POST",
                &url,
                &headers,
                Some(rpc.to_string()),
                deadline,
                trace,
            )
            .await
            .map_err(|e| error(format!("remote agent `{}`: {}", req.remote, Chain(&e))))?;
        if status != 200 {
            return Err(error(format!(
                "remote agent `{}` answered HTTP {status}{}",
                req.remote,
                if status == 401 || status == 403 {
                    " (set its token in the toolhost's environment: [a2a] remotes token_env)"
                } else {
                    ""
                }
            )));
        }
        let reply: Value = serde_json::from_str(&body).map_err(|e| {
            error(format!(
                "remote agent `{}` answered what is not JSON: {e}",
                req.remote
            ))
        })?;
        if let Some(e) = reply.get("error") {
            return Err(error(format!(
                "remote agent `{}` refused the task: {} (JSON-RPC {})",
                req.remote,
                e["message"].as_str().unwrap_or("no message"),
                e["code"]
            )));
        }
        tracing::info!(run_id = %req.run_id, agent = %req.agent, remote = %req.remote, "A2A delegation answered");
        answer_of(&req.remote, &reply["result"])
    }
}

/// The text of a part list.
fn text_of(parts: &Value) -> String {
    parts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            p["text"]
                .as_str()
                .map(str::to_string)
                .or_else(|| p.get("data").map(Value::to_string))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The answer in a `SendMessage` result: a task (its artifacts' text, or its final message) or
/// a message.
fn answer_of(remote: &str, result: &Value) -> Result<A2aAnswer, ErrorBody> {
    if let Some(m) = result.get("message") {
        return Ok(A2aAnswer {
            task_id: String::new(),
            text: text_of(&m["parts"]),
        });
    }
    let task = &result["task"];
    let task_id = task["id"].as_str().unwrap_or_default().to_string();
    let state = task["status"]["state"]
        .as_str()
        .unwrap_or("TASK_STATE_UNSPECIFIED");
    let said = text_of(&task["status"]["message"]["parts"]);
    match state {
        "TASK_STATE_COMPLETED" => {
            let artifacts: Vec<String> = task["artifacts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| text_of(&a["parts"]))
                .filter(|t| !t.is_empty())
                .collect();
            let text = if artifacts.is_empty() {
                said
            } else {
                artifacts.join("\n")
            };
            Ok(A2aAnswer { task_id, text })
        }
        other => Err(error(format!(
            "remote agent `{remote}`: task {task_id} ended {}{}",
            other.trim_start_matches("TASK_STATE_").to_ascii_lowercase(),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_from_artifacts_or_the_final_message_and_failures_name_their_state() {
        let done = json!({"task": {"id": "t1", "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"parts": [{"text": "42"}]}]}});
        assert_eq!(answer_of("far", &done).unwrap().text, "42");
        let said = json!({"task": {"id": "t2", "status": {"state": "TASK_STATE_COMPLETED",
            "message": {"parts": [{"text": "done"}]}}}});
        assert_eq!(answer_of("far", &said).unwrap().text, "done");
        let failed = json!({"task": {"id": "t3", "status": {"state": "TASK_STATE_FAILED",
            "message": {"parts": [{"text": "no budget"}]}}}});
        let e = answer_of("far", &failed).unwrap_err();
        assert!(
            e.message.contains("t3 ended failed: no budget"),
            "{}",
            e.message
        );
        let asks = json!({"task": {"id": "t4", "status": {"state": "TASK_STATE_INPUT_REQUIRED"}}});
        assert!(
            answer_of("far", &asks)
                .unwrap_err()
                .message
                .contains("input_required")
        );
    }
}
