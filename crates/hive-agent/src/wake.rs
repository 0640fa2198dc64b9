//! What the model reads: the wake prompt of a turn, the `recv` tool's
//! rendering of popped messages, and helper events made readable.

use std::fmt::Write as _;

use hive_proto::{DeliveredMessage, HelperEvent, SYSTEM_SENDER};

/// The banner on a message a previous harness popped but never acked.
pub const REDELIVERED_BANNER: &str =
    "[redelivered after a harness restart or an expired lease — may already be handled]";

/// The prompt of a turn woken by `messages`, with `unread` more waiting.
pub fn wake_prompt(messages: &[DeliveredMessage], unread: u64) -> String {
    let mut out = String::new();
    let n = messages.len();
    let _ = write!(
        out,
        "You have {n} new message{} in your hyperhive inbox.",
        plural(n)
    );
    if unread > 0 {
        let _ = write!(
            out,
            " {unread} more {} waiting: drain {} with the `recv` tool (`max` up to 32) when you are ready.",
            if unread == 1 { "is" } else { "are" },
            if unread == 1 { "it" } else { "them" },
        );
    }
    out.push_str("\n\n");
    out.push_str(&render_messages(messages));
    out.push_str(
        "\n\nReply with the `send` tool (set `in_reply_to` to the message id) if a reply is needed. \
         Your final text is not delivered to anyone.",
    );
    out
}

/// A turn the agent asked for itself (`request_next_turn`).
pub fn self_wake_prompt(unread: u64) -> String {
    let mut out = String::from(
        "You asked for another turn (`request_next_turn`). Continue where you left off.",
    );
    if unread > 0 {
        let _ = write!(
            out,
            " {unread} message{} {} waiting in your inbox (`recv`).",
            plural(usize::try_from(unread).unwrap_or(usize::MAX)),
            if unread == 1 { "is" } else { "are" }
        );
    }
    out
}

/// The checkpoint turn that precedes a compaction.
pub fn checkpoint_prompt(context_tokens: u64) -> String {
    format!(
        "Your context is {context_tokens} tokens and is about to be compacted. Before that \
         happens, write down anything you will need later that is not already on disk (open \
         tasks, decisions, who is waiting on you) in a notes file under your state directory, \
         then end your turn. Do not start new work."
    )
}

/// Messages as the model reads them, oldest first.
pub fn render_messages(messages: &[DeliveredMessage]) -> String {
    messages
        .iter()
        .map(render_message)
        .collect::<Vec<_>>()
        .join("\n\n---\n\n")
}

/// The `recv` tool's text: one message plainly, several with a header.
pub fn render_recv(messages: &[DeliveredMessage]) -> String {
    match messages.len() {
        0 => "(empty)".to_owned(),
        1 => render_message(&messages[0]),
        n => format!("popped {n} messages\n\n{}", render_messages(messages)),
    }
}

fn render_message(m: &DeliveredMessage) -> String {
    let mut out = String::new();
    if m.redelivered {
        out.push_str(REDELIVERED_BANNER);
        out.push('\n');
    }
    let _ = write!(out, "from: {} (message #{}", m.from, m.id);
    if let Some(parent) = m.in_reply_to {
        let _ = write!(out, ", in reply to #{parent}");
    }
    out.push(')');
    if m.from == SYSTEM_SENDER
        && let Ok(event) = serde_json::from_str::<HelperEvent>(&m.body)
    {
        let _ = write!(out, "\n\n[hive event] {}", render_helper(&event));
    } else {
        let _ = write!(out, "\n\n{}", m.body);
    }
    out
}

/// One helper event as a sentence.
pub fn render_helper(event: &HelperEvent) -> String {
    use HelperEvent::*;
    let with_note = |s: String, note: &Option<String>| match note {
        Some(note) => format!("{s}: {note}"),
        None => s,
    };
    let ok = |ok: bool| if ok { "succeeded" } else { "failed" };
    match event {
        ApprovalResolved {
            id,
            agent,
            commit_ref,
            status,
            note,
            running_sha,
        } => {
            let status = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{status:?}"));
            let what = if commit_ref.is_empty() {
                format!("approval #{id} for {agent} was {status}")
            } else {
                format!("approval #{id} for {agent} (commit {commit_ref}) was {status}")
            };
            let what = with_note(what, note);
            match running_sha {
                Some(sha) => format!("{what}; {agent} now runs config {sha}"),
                None => what,
            }
        }
        Spawned { agent, ok: o, note } => with_note(format!("spawn of {agent} {}", ok(*o)), note),
        Rebuilt { agent, ok: o, note } => with_note(format!("rebuild of {agent} {}", ok(*o)), note),
        Killed { agent } => format!("{agent} was stopped"),
        Destroyed { agent } => format!("{agent}'s container was destroyed"),
        ContainerCrash { agent, note } => with_note(format!("{agent}'s container crashed"), note),
        QuestionAsked {
            id,
            asker,
            question,
            options,
            multi,
            deadline_at,
        } => {
            let mut s = format!("{asker} asks you (question #{id}): {question}");
            if !options.is_empty() {
                let _ = write!(
                    s,
                    "\noptions{}: {}",
                    if *multi { " (pick any)" } else { "" },
                    options.join(" | ")
                );
            }
            if let Some(deadline) = deadline_at {
                let _ = write!(s, "\n(answer before unix time {deadline})");
            }
            s.push_str("\nAnswer with the `answer` tool.");
            s
        }
        QuestionAnswered {
            id,
            question,
            answer,
            answerer,
        } => format!("{answerer} answered your question #{id} ({question}): {answer}"),
        NeedsLogin { agent } => format!("{agent}'s engine needs a login"),
        LoggedIn { agent } => format!("{agent}'s engine logged in"),
        NeedsUpdate { agent } => format!("{agent} runs an outdated config and needs an update"),
        TaskReleased {
            id,
            title,
            agent,
            reason,
        } => format!(
            "task #{id} ({title}) is open again: {agent} held it, and {reason}; assign it or let \
             another agent claim it"
        ),
        QuotaReached { agent, until } => format!(
            "{agent} used up its subscription quota: parked until unix time {until} ({}), its \
             messages wait",
            hive_proto::live::quota_text(*until)
        ),
        BudgetRaiseRequested { agent, answer } => format!(
            "the operator answered {answer:?} to {agent} being over its budget: commit a larger \
             [budget] in {agent}'s agent.toml and request its deploy (request_apply_commit)"
        ),
        TaskAssigned { id, title, by } => format!(
            "{by} assigned you task #{id} ({title}): claim it with `task_claim` once it is \
             claimable"
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: i64, from: &str, body: &str) -> DeliveredMessage {
        DeliveredMessage {
            id,
            from: from.into(),
            to: "coder".into(),
            body: body.into(),
            at: 0,
            in_reply_to: None,
            redelivered: false,
        }
    }

    #[test]
    fn one_message() {
        let prompt = wake_prompt(&[msg(3, "operator", "please review")], 0);
        assert_eq!(
            prompt,
            "You have 1 new message in your hyperhive inbox.\n\n\
             from: operator (message #3)\n\nplease review\n\n\
             Reply with the `send` tool (set `in_reply_to` to the message id) if a reply is \
             needed. Your final text is not delivered to anyone."
        );
    }

    #[test]
    fn a_batch_with_a_redelivery_and_more_waiting() {
        let mut first = msg(1, "alice", "hi");
        first.redelivered = true;
        let mut second = msg(2, "bob", "re: hi");
        second.in_reply_to = Some(1);
        let prompt = wake_prompt(&[first, second], 2);
        assert!(prompt.starts_with(
            "You have 2 new messages in your hyperhive inbox. 2 more are waiting: drain them"
        ));
        assert!(prompt.contains(&format!(
            "{REDELIVERED_BANNER}\nfrom: alice (message #1)\n\nhi\n\n---\n\nfrom: bob (message #2, in reply to #1)\n\nre: hi"
        )));
    }

    #[test]
    fn helper_events_are_rendered() {
        let body = r#"{"event":"approval_resolved","id":4,"agent":"coder","commit_ref":"","status":"approved"}"#;
        let text = render_recv(&[msg(9, "system", body)]);
        assert_eq!(
            text,
            "from: system (message #9)\n\n[hive event] approval #4 for coder was approved"
        );
        let body = r#"{"event":"question_asked","id":2,"asker":"alice","question":"ship it?","options":["yes","no"]}"#;
        let text = render_recv(&[msg(10, "system", body)]);
        assert!(text.contains("alice asks you (question #2): ship it?\noptions: yes | no"));
        // A system message that is not an event is shown as is.
        let text = render_recv(&[msg(11, "system", "plain words")]);
        assert!(text.ends_with("\n\nplain words"));
        // Only `system` speaks in events.
        let text = render_recv(&[msg(12, "alice", body)]);
        assert!(text.ends_with(body));
    }

    #[test]
    fn recv_rendering() {
        assert_eq!(render_recv(&[]), "(empty)");
        let text = render_recv(&[msg(1, "a", "x"), msg(2, "b", "y")]);
        assert!(text.starts_with("popped 2 messages\n\nfrom: a (message #1)"));
    }
}
