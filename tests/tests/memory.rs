//! The memory service through the real processes: agents using the memory tools (scripted LLM,
//! tests/agents/memory-rules.toml), scope isolation with forged requests on the memory socket,
//! recall into the prompt and auto_store, the embedding reference check through the service,
//! export → import, the MCP memory server's file, SIGKILL during a write burst, malformed and
//! oversized input, and a corrupt database file.

use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use caxton_ipc::api::{ErrorKind, RunEvent, RunRequest, ServiceState};
use caxton_ipc::frame::{self, MAX_FRAME_LEN};
use caxton_ipc::handshake::{Hello, HelloReply, Role};
use caxton_ipc::memory::{MemoryRequest, MemoryResponse, StoreRequest};
use caxton_tests::{Daemon, Options, assert_contains, repo_root};

fn options(extra_config: &str) -> Options {
    Options {
        agents: vec![
            "tests/agents/memo-a.toml".into(),
            "tests/agents/memo-b.toml".into(),
            "tests/agents/memo-team.toml".into(),
            "tests/agents/no-tools.toml".into(),
        ],
        rules: Some("tests/agents/memory-rules.toml".into()),
        extra_config: extra_config.into(),
        ..Options::default()
    }
}

/// Runs `agent` with `input` and returns its answer, failing the test on a failed run.
fn ask(d: &Daemon, agent: &str, input: &str) -> String {
    let out = d.run(agent, input).expect("run");
    match out.answer() {
        Some(a) => a.to_string(),
        None => panic!("{agent} `{input}` failed: {out:?}\n{}", d.log_text()),
    }
}

/// The `name` of each object in the JSON array `list`.
fn names<T: FromIterator<String>>(list: &serde_json::Value) -> T {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn store(d: &Daemon, scope: &str, name: &str, observations: &[&str]) {
    let req = MemoryRequest::Store(StoreRequest {
        scope: scope.into(),
        name: name.into(),
        entity_type: "fact".into(),
        observations: observations.iter().map(|s| s.to_string()).collect(),
    });
    match d.memory(req).expect("api") {
        Ok(MemoryResponse::Ok) => {}
        other => panic!("store: {other:?}"),
    }
}

/// `caxton memory export` of all of `d`'s memory to the file `name` in its directory; returns
/// the file's text.
fn export(d: &Daemon, name: &str) -> String {
    let path = d.dir().join(name);
    d.cli_ok(&["memory", "export", "-o", path.to_str().unwrap()]);
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn agents_store_relate_and_find_memories() {
    let d = Daemon::start(options("")).unwrap();
    let created = json(&ask(
        &d,
        "memo-a",
        "remember Alice: Alice works at Acme Corp as a data engineer",
    ));
    assert_eq!(created[0]["name"], "Alice");
    assert_eq!(created[0]["entityType"], "fact");
    ask(
        &d,
        "memo-a",
        "remember Acme Corp: Acme Corp builds rockets for satellite launches",
    );
    ask(
        &d,
        "memo-a",
        "remember Lunch: The canteen serves pasta on Fridays",
    );
    // Creating an entity again changes nothing and returns nothing, as the MCP server does.
    assert_eq!(
        json(&ask(&d, "memo-a", "remember Alice: something else")),
        serde_json::json!([])
    );
    let added = json(&ask(&d, "memo-a", "note Alice: Alice mentors two juniors"));
    assert_eq!(
        added[0]["addedObservations"][0],
        "Alice mentors two juniors"
    );
    let rel = json(&ask(&d, "memo-a", "relate Alice > works_at > Acme Corp"));
    assert_eq!(rel[0]["relationType"], "works_at");

    // Semantic search ranks by meaning: no query word appears in the best observation.
    let found = json(&ask(&d, "memo-a", "recall which company makes spacecraft?"));
    assert_eq!(found["results"][0]["name"], "Acme Corp", "{found}");
    assert!(
        found["results"][0]["similarity"].as_f64().unwrap() > 0.3,
        "{found}"
    );
    // search_nodes is the MCP server's case-insensitive substring match, relations included.
    let nodes = json(&ask(&d, "memo-a", "find acme"));
    assert_eq!(
        names::<BTreeSet<_>>(&nodes["entities"]),
        BTreeSet::from(["Alice", "Acme Corp"].map(String::from))
    );
    assert_eq!(nodes["relations"][0]["from"], "Alice");
    let open = json(&ask(&d, "memo-a", "open Alice"));
    assert_eq!(
        open["entities"][0]["observations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(open["relations"][0]["to"], "Acme Corp");
    // A relation to an entity that does not exist is refused, and the LLM is told why.
    let out = d.run("memo-a", "relate Alice > knows > Nobody").unwrap();
    let (_, _, ok, text) = out.tool_results()[0];
    assert!(
        !ok && text.contains("Nobody") && text.contains("not found"),
        "{text}"
    );

    // The operator sees the same memory from the CLI.
    let cli = d.cli(&[
        "memory",
        "search",
        "rocket launches",
        "--scope",
        "agent:memo-a",
        "--json",
    ]);
    assert!(cli.status.success(), "{cli:?}");
    let hits = json(&String::from_utf8_lossy(&cli.stdout));
    assert_eq!(hits["hits"][0]["name"], "Acme Corp");
    let kw = d.cli(&["memory", "search", "pasta", "--mode", "keyword"]);
    assert!(
        String::from_utf8_lossy(&kw.stdout).contains("Lunch"),
        "{kw:?}"
    );
    let show = d.cli(&["memory", "show", "Alice", "--scope", "agent:memo-a"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("Alice mentors two juniors") && text.contains("Alice -works_at-> Acme Corp"),
        "{text}"
    );

    // Deleting an entity removes its relations, and it is no longer found.
    ask(&d, "memo-a", "forget Acme Corp");
    let open = json(&ask(&d, "memo-a", "open Alice"));
    assert_eq!(open["relations"], serde_json::json!([]));
    let found = json(&ask(&d, "memo-a", "recall which company makes spacecraft?"));
    assert!(
        found["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] != "Acme Corp"),
        "{found}"
    );
}

#[test]
fn an_agent_never_reads_or_writes_another_agents_private_memory() {
    let d = Daemon::start(options("")).unwrap();
    ask(&d, "memo-a", "remember Launch: the launch code is 7351");
    store(
        &d,
        "global",
        "Office",
        &["The office wifi password is on the fridge"],
    );

    // memo-b's searches cover its own scope and global only.
    let found = json(&ask(&d, "memo-b", "recall what is the launch code?"));
    let text = found.to_string();
    assert!(!text.contains("7351") && !text.contains("Launch"), "{text}");
    let graph = ask(&d, "memo-b", "graph");
    assert!(!graph.contains("7351"), "{graph}");
    // Global memory is shared.
    let found = json(&ask(&d, "memo-b", "recall where is the wifi password?"));
    assert_eq!(found["results"][0]["name"], "Office", "{found}");

    // Naming the other agent's scope in the tool call is refused by the service.
    let out = d.run("memo-b", "peek agent:memo-a launch code").unwrap();
    let (_, _, ok, text) = out.tool_results()[0];
    assert!(!ok, "{out:?}");
    assert!(
        text.contains("may not read memory scope `agent:memo-a`") && !text.contains("7351"),
        "{text}"
    );
    let out = d
        .run("memo-b", "write agent:memo-a Launch: the code is now 0000")
        .unwrap();
    let (_, _, ok, text) = out.tool_results()[0];
    assert!(!ok && text.contains("may not write"), "{text}");
    // Global is readable but not writable for an agent-scoped agent.
    let out = d.run("memo-b", "write global Office: moved").unwrap();
    assert!(!out.tool_results()[0].2, "{out:?}");

    // Forged requests straight to the memory socket.
    let sock = d.memory_socket();
    let hello = |role| {
        let mut s = UnixStream::connect(&sock).expect("connect");
        frame::write_sync(&mut s, &Hello::new(role)).expect("hello");
        let reply: HelloReply = frame::read_sync(&mut s, MAX_FRAME_LEN).expect("reply");
        (s, reply)
    };
    // Only the caxton process that started the service may act as the supervisor.
    let (_, reply) = hello(Role::Supervisor);
    match reply {
        HelloReply::Rejected { reason } => {
            assert!(reason.contains("only from the caxton process"), "{reason}")
        }
        other => panic!("a forged supervisor was welcomed: {other:?}"),
    }
    // A worker must attach with a live run's token; guessing fails, and nothing works unattached.
    let (mut s, reply) = hello(Role::Worker);
    assert!(matches!(reply, HelloReply::Welcome(_)));
    let mut request = |req: &MemoryRequest| -> MemoryResponse {
        frame::write_sync(&mut s, req).expect("send");
        frame::read_sync(&mut s, MAX_FRAME_LEN).expect("recv")
    };
    let call = MemoryRequest::CallTool {
        name: "semantic_search".into(),
        arguments: r#"{"query": "launch code", "scope": "agent:memo-a"}"#.into(),
    };
    for req in [
        call.clone(),
        MemoryRequest::Attach {
            token: "0123456789abcdef0123456789abcdef".into(),
        },
        call,
        MemoryRequest::Search(caxton_ipc::memory::SearchQuery {
            query: "launch code".into(),
            mode: Default::default(),
            scopes: vec![],
            entity_types: vec![],
            limit: 10,
            offset: 0,
            min_similarity: 0.0,
            with_observations: true,
        }),
        MemoryRequest::Register {
            token: "mine".into(),
            grant: caxton_ipc::memory::MemoryGrant {
                agent: "memo-b".into(),
                run_id: "forged".into(),
                write: "agent:memo-a".into(),
                read: vec!["agent:memo-a".into()],
            },
        },
        MemoryRequest::Export {
            scopes: vec![],
            offset: 0,
            limit: 10,
        },
        MemoryRequest::Metrics,
    ] {
        match request(&req) {
            MemoryResponse::Error(e) => {
                assert_eq!(e.kind, ErrorKind::PermissionDenied, "{req:?}: {e:?}")
            }
            other => panic!("{req:?} was answered: {other:?}"),
        }
    }
    // The API socket refuses grant requests too.
    match d.memory(MemoryRequest::Register {
        token: "t".into(),
        grant: caxton_ipc::memory::MemoryGrant {
            agent: "x".into(),
            run_id: "forged".into(),
            write: "global".into(),
            read: vec![],
        },
    }) {
        Ok(Err(e)) => assert_eq!(e.kind, ErrorKind::PermissionDenied),
        other => panic!("{other:?}"),
    }
    // The private memory is intact.
    let found = json(&ask(&d, "memo-a", "recall what is the launch code?"));
    assert_eq!(found["results"][0]["name"], "Launch", "{found}");
}

#[test]
fn relevant_memories_reach_the_prompt_and_interactions_are_stored() {
    let d = Daemon::start(options("")).unwrap();
    store(
        &d,
        "workspace:team",
        "Staging DB",
        &["The staging database runs on host db-7 in rack 3"],
    );
    store(
        &d,
        "workspace:team",
        "Canteen",
        &["Lunch is served from noon"],
    );
    store(
        &d,
        "agent:memo-a",
        "Private",
        &["The staging database password is hunter2"],
    );
    let mut req = RunRequest::new("memo-team", "Where does the staging database run?");
    req.record = true;
    let out = d.run_req(req).unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let recalled = out
        .events
        .iter()
        .find_map(|e| match e {
            RunEvent::MemoryRecalled { memories } => Some(memories.clone()),
            _ => None,
        })
        .expect("a memory_recalled event");
    assert!(recalled[0].contains("db-7"), "{recalled:?}");
    assert!(
        recalled.iter().all(|m| !m.contains("hunter2")),
        "another scope leaked: {recalled:?}"
    );
    // The LLM saw them: they are in the system prompt of the recorded request.
    let exchange = out
        .events
        .iter()
        .find_map(|e| match e {
            RunEvent::LlmExchange(x) => Some(x.clone()),
            _ => None,
        })
        .expect("an llm_exchange event");
    let request = serde_json::to_string(&exchange.request).unwrap();
    assert!(
        request.contains("Relevant memories") && request.contains("db-7"),
        "{request}"
    );
    // auto_store kept the interaction in the workspace scope.
    let stored = out
        .events
        .iter()
        .find_map(|e| match e {
            RunEvent::MemoryStored { entity, error } => Some((entity.clone(), error.clone())),
            _ => None,
        })
        .expect("a memory_stored event");
    assert_eq!(stored.1, None, "{stored:?}");
    let g = d.memory_graph("workspace:team", std::slice::from_ref(&stored.0));
    let obs: Vec<_> = g.entities[0]
        .observations
        .iter()
        .map(|o| o.text.as_str())
        .collect();
    assert!(
        obs[0].contains("Where does the staging database run?"),
        "{obs:?}"
    );
    assert!(obs[1].starts_with("memo-team answered: noted:"), "{obs:?}");
    // An unrelated question recalls nothing above the agent's min_similarity.
    let out = d
        .run("memo-team", "Quantum chromodynamics of gluons")
        .unwrap();
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, RunEvent::MemoryRecalled { .. })),
        "{out:?}"
    );
}

#[test]
fn the_service_embeds_like_sentence_transformers() {
    #[derive(serde::Deserialize)]
    struct Reference {
        sentences: Vec<String>,
        vectors: Vec<Vec<f32>>,
    }
    let path = repo_root().join("memory/tests/data/minilm_reference.json");
    let r: Reference = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let d = Daemon::start(options("")).unwrap();
    let got = match d
        .memory(MemoryRequest::Embed {
            texts: r.sentences.clone(),
        })
        .unwrap()
    {
        Ok(MemoryResponse::Embeddings(v)) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(got.len(), r.vectors.len());
    for (i, (g, w)) in got.iter().zip(&r.vectors).enumerate() {
        let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / (norm(g) * norm(w));
        assert!(
            cos >= 0.99,
            "sentence {i} {:?}: cosine {cos}",
            r.sentences[i]
        );
    }
}

#[test]
fn export_then_import_gives_the_same_graph() {
    let d = Daemon::start(options("")).unwrap();
    for input in [
        "remember Alice: Alice works at Acme Corp",
        "remember Acme Corp: Acme Corp builds rockets",
        "note Alice: Alice likes \u{e9}clairs \u{1f680}",
        "relate Alice > works_at > Acme Corp",
        "relate Acme Corp > employs > Alice",
    ] {
        ask(&d, "memo-a", input);
    }
    store(
        &d,
        "global",
        "Office",
        &["Badge readers were replaced in May", "Parking is free"],
    );
    store(&d, "workspace:team", "Standup", &["Standup is at 9:30"]);
    let exported = export(&d, "first.json");
    let first = d.dir().join("first.json");
    assert_contains(&exported, &["\"format\": \"caxton-memory\""]);

    let fresh = Daemon::start(options("")).unwrap();
    let out = fresh.cli_ok(&["memory", "import", first.to_str().unwrap()]);
    assert_contains(&out, &["imported 4 entities, 6 observations, 2 relations"]);
    assert_eq!(
        exported,
        export(&fresh, "second.json"),
        "export → import → export differs"
    );
    // The imported memories are searchable (their vectors were computed on import).
    let found = json(&ask(&fresh, "memo-a", "recall who builds spacecraft?"));
    assert_eq!(found["results"][0]["name"], "Acme Corp", "{found}");
    // Importing again merges: nothing new. With --replace, the file's scopes are emptied first.
    let out = fresh.cli(&["memory", "import", first.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("imported 0 entities, 0 observations, 0 relations"),
        "{out:?}"
    );
    store(&fresh, "global", "Extra", &["added after the export"]);
    fresh.cli_ok(&["memory", "import", "--replace", first.to_str().unwrap()]);
    assert_eq!(
        exported,
        export(&fresh, "third.json"),
        "--replace did not restore the export"
    );
    // A file that is not an export is refused with a hint.
    let out = fresh.cli(&[
        "memory",
        "import",
        repo_root()
            .join("tests/data/mcp-memory.jsonl")
            .to_str()
            .unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--format mcp-jsonl"),
        "{out:?}"
    );
}

#[test]
fn imports_the_mcp_memory_servers_file() {
    let d = Daemon::start(options("")).unwrap();
    let file = repo_root().join("tests/data/mcp-memory.jsonl");
    d.cli_ok(&[
        "memory",
        "import",
        "--format",
        "mcp-jsonl",
        "--scope",
        "workspace:moved",
        file.to_str().unwrap(),
    ]);
    // The graph the MCP server itself printed for that file (read_graph).
    let want = json(
        &std::fs::read_to_string(repo_root().join("tests/data/mcp-memory-graph.json")).unwrap(),
    );
    let names: Vec<String> = names(&want["entities"]);
    let g = d.memory_graph("workspace:moved", &names);
    let got_entities: Vec<serde_json::Value> = g
        .entities
        .iter()
        .map(|e| serde_json::json!({"name": e.name, "entityType": e.entity_type, "observations": e.observations.iter().map(|o| o.text.clone()).collect::<Vec<_>>()}))
        .collect();
    assert_eq!(serde_json::Value::Array(got_entities), want["entities"]);
    let got_relations: BTreeSet<String> = g
        .relations
        .iter()
        .map(|r| format!("{}|{}|{}", r.from, r.relation_type, r.to))
        .collect();
    let want_relations: BTreeSet<String> = want["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}",
                r["from"].as_str().unwrap(),
                r["relationType"].as_str().unwrap(),
                r["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got_relations, want_relations);
    // Non-ASCII text and embedded quotes and newlines survive.
    let all = serde_json::to_string(&g).unwrap();
    assert!(
        all.contains("Zürich") && all.contains("日本語") && all.contains("\\\"ship it\\\"\\n"),
        "{all}"
    );
}

#[test]
fn sigkill_during_a_write_burst_loses_no_acknowledged_write() {
    let d = Daemon::start(options("")).unwrap();
    let pid = d.service_pid(caxton_tests::Service::Memory);
    let writer = {
        let socket = d.socket.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut failures = 0;
            let started = Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(8) && acked.len() < 400 {
                i += 1;
                let req = caxton_ipc::api::ApiRequest::Memory(MemoryRequest::Store(StoreRequest {
                    scope: "global".into(),
                    name: format!("burst-{i}"),
                    entity_type: "burst".into(),
                    observations: vec![format!("write number {i} of the burst")],
                }));
                let ok = caxton_tests::Conn::connect(&socket)
                    .and_then(|mut c| c.call(&req))
                    .is_ok_and(|r| {
                        matches!(r, caxton_ipc::api::ApiResponse::Memory(MemoryResponse::Ok))
                    });
                if ok {
                    acked.push(i);
                } else {
                    failures += 1;
                }
            }
            (acked, failures)
        })
    };
    // Kill it once some writes are in.
    let started = Instant::now();
    loop {
        if let Ok(Ok(MemoryResponse::Stats(s))) = d.memory(MemoryRequest::Stats {
            integrity_check: false,
        }) && s.scopes.iter().any(|sc| sc.entities >= 40)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the burst did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (acked, failures) = writer.join().unwrap();
    assert!(
        failures > 0,
        "the kill interrupted nothing: {} acked",
        acked.len()
    );
    d.wait_restarted(caxton_tests::Service::Memory, pid);
    let names: Vec<String> = acked.iter().map(|i| format!("burst-{i}")).collect();
    for chunk in names.chunks(200) {
        let g = d.memory_graph("global", chunk);
        let have: BTreeSet<_> = g.entities.iter().map(|e| e.name.clone()).collect();
        let lost: Vec<_> = chunk.iter().filter(|n| !have.contains(*n)).collect();
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        assert!(g.entities.iter().all(|e| e.observations.len() == 1));
    }
    let out = d.cli(&["memory", "stats", "--check"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("integrity:  ok"),
        "{out:?}"
    );
    // Every acknowledged write is still searchable.
    match d
        .memory(MemoryRequest::Stats {
            integrity_check: false,
        })
        .unwrap()
    {
        Ok(MemoryResponse::Stats(s)) => assert!(s.indexed_vectors >= acked.len() as u64, "{s:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_the_service_lives_on() {
    let d = Daemon::start(options("")).unwrap();
    let sock = d.memory_socket();
    // Garbage instead of a Hello.
    let mut s = UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    // A worker frame header announcing 100 MiB: refused with a reason, before any allocation.
    let mut s = UnixStream::connect(&sock).unwrap();
    frame::write_sync(&mut s, &Hello::new(Role::Worker)).unwrap();
    let _: HelloReply = frame::read_sync(&mut s, MAX_FRAME_LEN).unwrap();
    let mut header = Vec::from(*b"CXTN");
    header.extend(caxton_ipc::PROTOCOL_VERSION.to_be_bytes());
    header.extend([0, 0]);
    header.extend((100u32 << 20).to_be_bytes());
    std::io::Write::write_all(&mut s, &header).unwrap();
    match frame::read_sync::<MemoryResponse>(&mut s, MAX_FRAME_LEN).unwrap() {
        MemoryResponse::Error(e) => assert!(e.message.contains("refused"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    // A frame that is not a request.
    let mut s = UnixStream::connect(&sock).unwrap();
    frame::write_sync(&mut s, &Hello::new(Role::Worker)).unwrap();
    let _: HelloReply = frame::read_sync(&mut s, MAX_FRAME_LEN).unwrap();
    frame::write_sync(&mut s, &"not a memory request".repeat(10)).unwrap();
    assert!(matches!(
        frame::read_sync::<MemoryResponse>(&mut s, MAX_FRAME_LEN).unwrap(),
        MemoryResponse::Error(_)
    ));

    // An oversized observation is refused, not cut, from the CLI and from a tool call.
    let big = "x".repeat(5000);
    let out = d.cli(&["memory", "store", "Big", "-o", &big]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeds the limit of 4096 bytes"),
        "{out:?}"
    );
    let out = d.run("memo-a", &format!("remember Big: {big}")).unwrap();
    let (_, _, ok, text) = out.tool_results()[0];
    assert!(!ok && text.contains("max_observation_bytes"), "{text}");
    // Bad scopes and arguments.
    let out = d.cli(&["memory", "store", "X", "-o", "y", "--scope", "agent:../etc"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid memory scope"),
        "{out:?}"
    );
    let out = d.cli(&["memory", "search", "q", "--scope", "nonsense"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Still serving, same process.
    assert_eq!(d.status().unwrap().memory_restarts, 0);
    let created = json(&ask(&d, "memo-a", "remember Fine: still fine"));
    assert_eq!(created[0]["name"], "Fine");
}

#[test]
fn a_corrupt_database_is_a_clear_error_without_a_busy_restart_loop() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("memory.db");
    std::fs::write(&db, vec![0x42u8; 64 * 1024]).unwrap();
    let d = Daemon::start(options(&format!(
        "\n[memory]\ndatabase = \"{}\"\n",
        db.display()
    )))
    .unwrap();
    // Agents without memory still run.
    assert_eq!(
        ask(&d, "no-tools", "What is 2 + 2?"),
        "noted: What is 2 + 2?"
    );
    // The operator and agents with memory get the reason, naming the file.
    let out = d.cli(&["memory", "stats"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&db.display().to_string()) && err.contains("not a database"),
        "{err}"
    );
    let run = d.run("memo-a", "remember A: b").unwrap();
    run.expect_failure(ErrorKind::Memory, &["not a database"]);
    // Restarts back off (0.1 s, doubling, up to 30 s): a handful in 4 s, not hundreds.
    std::thread::sleep(Duration::from_secs(4));
    let status = d.status().unwrap();
    assert!(
        matches!(status.memory, Some(ServiceState::Restarting { .. })),
        "{:?}",
        status.memory
    );
    assert!(
        (2..=7).contains(&status.memory_restarts),
        "{} restarts in ~4 s",
        status.memory_restarts
    );
    let out = d.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("memory:   restarting"),
        "{out:?}"
    );
    // The file was not touched.
    assert_eq!(std::fs::read(&db).unwrap(), vec![0x42u8; 64 * 1024]);
}

#[test]
fn prune_applies_age_count_and_configured_retention() {
    let d = Daemon::start(options(
        "\n[memory.retention.\"workspace:*\"]\nmax_entities = 1\n",
    ))
    .unwrap();
    for i in 1..=5 {
        store(
            &d,
            "global",
            &format!("note-{i}"),
            &[&format!("note number {i} about the quarterly report")],
        );
    }
    store(&d, "workspace:x", "old", &["an older workspace memory"]);
    store(&d, "workspace:x", "new", &["a newer workspace memory"]);
    let count = |scope: &str| match d
        .memory(MemoryRequest::Stats {
            integrity_check: false,
        })
        .unwrap()
    {
        Ok(MemoryResponse::Stats(s)) => s
            .scopes
            .iter()
            .find(|x| x.scope == scope)
            .map_or(0, |x| x.entities),
        other => panic!("{other:?}"),
    };
    // `caxton memory prune` with `flags`; its output says `said`.
    let prune = |flags: &[&str], said: &str| {
        let args = [&["memory", "prune"][..], flags].concat();
        assert_contains(&d.cli_ok(&args), &[said]);
    };
    let keep_two = ["--scope", "global", "--max-entities", "2"];
    prune(
        &[&keep_two[..], &["--dry-run"]].concat(),
        "would remove 3 entities, 3 observations",
    );
    assert_eq!(count("global"), 5);
    prune(&keep_two, "removed 3 entities");
    // The most recently updated are kept, and the removed ones are gone from search too.
    let out = d.cli(&[
        "memory",
        "search",
        "quarterly report",
        "--mode",
        "semantic",
        "--json",
    ]);
    let hits = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        names::<BTreeSet<_>>(&hits["hits"]),
        BTreeSet::from(["note-4".to_string(), "note-5".to_string()])
    );
    // No flags: the configured retention (workspace:* keeps 1); global has no rule.
    prune(&[], "removed 1 entities");
    assert_eq!(count("workspace:x"), 1);
    assert_eq!(count("global"), 2);
    d.cli_ok(&["memory", "show", "new", "--scope", "workspace:x"]);
    // By age.
    std::thread::sleep(Duration::from_millis(50));
    prune(&["--older-than", "10ms"], "removed 3 entities");
    assert_eq!(count("global"), 0);
}

#[test]
fn memory_tool_calls_are_audited_under_the_runs_identity() {
    let d = Daemon::start(options("")).unwrap();
    let out = d.run("memo-a", "remember Audit: every call").unwrap();
    assert!(out.answer().is_some(), "{out:?}");
    let run_id = out
        .events
        .iter()
        .find_map(|e| match e {
            caxton_ipc::api::RunEvent::Started { run_id, .. } => Some(run_id.clone()),
            _ => None,
        })
        .unwrap();
    let log = d.dir().join("state/audit/memory-calls.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<caxton_ipc::audit::AuditRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rec = records
        .iter()
        .find(|r| r.tool == "create_entities")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        (
            rec.agent.as_str(),
            &rec.run_id,
            rec.server.as_str(),
            rec.outcome.as_str()
        ),
        ("memo-a", &run_id, "memory", "ok")
    );
    // `caxton audit verify` checks both logs.
    let out = std::process::Command::new(caxton_tests::bin("caxton"))
        .args(["audit", "verify", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("memory-calls.log: ok") && stdout.contains("tool-calls.log"),
        "{stdout}"
    );
}
