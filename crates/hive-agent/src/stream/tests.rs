//! Parsing over lines recorded from the real `claude` CLI (2.1.330) against
//! a scripted Messages-API server (`fixtures/`).

use super::*;

const TOOL_TURN: &str = include_str!("../../fixtures/claude-2.1.330-tool-turn.jsonl");
const ERROR_LOGIN: &str = include_str!("../../fixtures/claude-2.1.330-error-login.jsonl");
const ERROR_429: &str = include_str!("../../fixtures/claude-2.1.330-error-429.jsonl");
const ERROR_LONG: &str = include_str!("../../fixtures/claude-2.1.330-error-long.jsonl");

fn events(text: &str) -> Vec<StreamEvent> {
    text.lines()
        .map(|line| parse_line(line).unwrap().0)
        .collect()
}

fn observe(text: &str) -> Observation {
    let mut obs = Observation::default();
    for event in events(text) {
        obs.observe(&event);
    }
    obs
}

#[test]
fn system_init() {
    let StreamEvent::Init(init) = &events(TOOL_TURN)[0] else {
        panic!("first line is not init");
    };
    assert_eq!(
        init.session_id.as_deref(),
        Some("4e642013-115f-4dd4-ba48-aa227d570b88")
    );
    assert_eq!(init.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(init.version.as_deref(), Some("2.1.330"));
    assert!(init.tools.iter().any(|t| t == "Read"));
    assert!(init.mcp_servers.is_empty());
}

#[test]
fn assistant_text_and_tool_use() {
    let all = events(TOOL_TURN);
    let StreamEvent::Assistant(text) = &all[1] else {
        panic!("{:?}", all[1]);
    };
    assert_eq!(text.message_id.as_deref(), Some("msg_tool1"));
    assert_eq!(
        text.content,
        vec![ContentBlock::Text {
            text: "Let me read it.".into()
        }]
    );
    assert_eq!(
        text.usage,
        Some(TokenUsage {
            input_tokens: 1200,
            output_tokens: 1,
            cache_creation_input_tokens: 300,
            cache_read_input_tokens: 4000,
        })
    );
    assert_eq!(text.error, None);
    let StreamEvent::Assistant(tool) = &all[2] else {
        panic!("{:?}", all[2]);
    };
    assert_eq!(
        tool.content,
        vec![ContentBlock::ToolUse {
            id: "toolu_01".into(),
            name: "Read".into(),
            input: serde_json::json!({"file_path": "/tmp/disc/hello.txt"}),
        }]
    );
}

#[test]
fn other_system_lines_are_kept() {
    let all = events(TOOL_TURN);
    let StreamEvent::System { subtype, raw } = &all[3] else {
        panic!("{:?}", all[3]);
    };
    assert_eq!(subtype, "permission_denied");
    assert_eq!(raw["tool_name"], "Read");
}

#[test]
fn user_tool_result() {
    let all = events(TOOL_TURN);
    let StreamEvent::User(user) = &all[4] else {
        panic!("{:?}", all[4]);
    };
    let [
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
        },
    ] = user.content.as_slice()
    else {
        panic!("{:?}", user.content);
    };
    assert_eq!(tool_use_id, "toolu_01");
    assert!(is_error);
    assert!(content.as_str().unwrap().contains("permissions to read"));
}

#[test]
fn result_success() {
    let all = events(TOOL_TURN);
    let StreamEvent::Result(result) = all.last().unwrap() else {
        panic!("last line is not a result");
    };
    assert_eq!(result.subtype, "success");
    assert!(!result.is_error);
    assert_eq!(result.result.as_deref(), Some("hello from fake"));
    assert_eq!(result.terminal_reason.as_deref(), Some("completed"));
    assert_eq!(result.total_cost_usd, Some(0.0066));
    assert_eq!(result.num_turns, Some(2));
    assert_eq!(
        result.usage,
        Some(TokenUsage {
            input_tokens: 1300,
            output_tokens: 25,
            cache_creation_input_tokens: 300,
            cache_read_input_tokens: 4000,
        })
    );
}

#[test]
fn observation_of_a_tool_turn() {
    let obs = observe(TOOL_TURN);
    assert_eq!(obs.tool_calls.get("Read"), Some(&1));
    assert_eq!(obs.tool_call_count(), 1);
    assert_eq!(obs.inferences, 2);
    // The last inference is the small one after the tool result.
    assert_eq!(obs.context_tokens(), Some(100));
    assert_eq!(obs.total_usage.input_tokens, 1300);
    assert_eq!(obs.session_cost_usd, Some(0.0066));
    assert_eq!(obs.api_error, None);
}

#[test]
fn result_errors() {
    let login = observe(ERROR_LOGIN);
    assert_eq!(login.api_error.as_deref(), Some("authentication_failed"));
    let result = login.result.unwrap();
    assert!(result.is_error);
    assert_eq!(
        result.result.as_deref(),
        Some("Not logged in · Please run /login")
    );
    assert_eq!(login.inferences, 0, "synthetic messages are not inferences");

    let limited = observe(ERROR_429);
    assert_eq!(limited.api_error.as_deref(), Some("rate_limit"));
    assert_eq!(limited.api_error_status, Some(429));
    assert!(limited.result.unwrap().is_error);

    let long = observe(ERROR_LONG);
    let result = long.result.unwrap();
    assert!(result.is_error);
    assert_eq!(result.terminal_reason.as_deref(), Some("prompt_too_long"));
    assert_eq!(result.api_error_status, Some(400));
}

#[test]
fn unknown_and_bad_lines() {
    let (event, raw) = parse_line(r#"{"type":"stream_event","event":{}}"#).unwrap();
    assert_eq!(event, StreamEvent::Unknown(raw));
    let (event, _) = parse_line(r#"[1,2]"#).unwrap();
    assert!(matches!(event, StreamEvent::Unknown(_)));
    assert!(parse_line("Error: something broke").is_err());
}

#[test]
fn set_status_tool_call_is_seen() {
    let line = r#"{"type":"assistant","message":{"id":"m1","model":"x","content":[{"type":"tool_use","id":"t","name":"mcp__hive__set_status","input":{"text":"reviewing"}}],"usage":{"input_tokens":3}}}"#;
    let mut obs = Observation::default();
    obs.observe(&parse_line(line).unwrap().0);
    assert_eq!(obs.status_text.as_deref(), Some("reviewing"));
    assert_eq!(obs.tool_calls.get("mcp__hive__set_status"), Some(&1));
}
