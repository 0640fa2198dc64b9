//! Every wire type of hyperhive, as plain serde types.
//!
//! This crate owns the contracts between the daemon (`hive serve`), its
//! clients (the admin CLI, the dashboard, the in-container harness and MCP
//! server) and the browser: JSON-lines requests and responses of the three
//! socket kinds ([`host`], [`agent`]), the [`HelperEvent`]s core pushes into
//! inboxes, the [`DashboardEvent`]s and [`LiveEvent`]s streamed to browsers,
//! and the one validated [`AgentName`] type. Tags and field names follow the
//! seed documents exactly; tests pin the JSON line of every variant.
//!
//! Architecture invariant: no I/O and no async runtime here — serde only.

pub mod agent;
pub mod control;
pub mod dashboard;
pub mod helper;
pub mod host;
pub mod link;
pub mod live;
pub mod name;
pub mod rfc3339;
pub mod task;

pub use agent::{
    AgentAnswer, AgentRequest, AgentResponse, DeliveredMessage, InboxRow, LooseEnd, LooseEndKind,
    ManagerOnlyRequest, ManagerRequest, ManagerResponse, OutgoingMessage,
};
pub use dashboard::{DashboardEvent, MessageView};
pub use helper::HelperEvent;
pub use host::{
    AgentStatusRow, Approval, ApprovalKind, ApprovalStatus, HiveUrls, HostRequest, HostResponse,
    KeptRunning, QuestionRow, Scope,
};
pub use live::{LiveEvent, LiveFrame};
pub use name::{AgentName, NameError, Recipient};
pub use task::{NewTask, Task, TaskEvent, TaskFilter, TaskPatch, TaskStatus};

/// Broker name of the privileged manager agent.
pub const MANAGER_AGENT: &str = "manager";
/// Broker name of the human operator. Never `recv`s; reads the dashboard.
pub const OPERATOR_RECIPIENT: &str = "operator";
/// Sender core uses for events it pushes into an agent's inbox.
pub const SYSTEM_SENDER: &str = "system";
/// Recipient meaning "every agent except the sender".
pub const BROADCAST_RECIPIENT: &str = "*";

/// Protocol version carried first on every host.sock response.
pub const HOST_PROTOCOL_VERSION: u32 = 1;
/// Longest request line any socket accepts, newline excluded.
pub const MAX_REQUEST_LINE: usize = 1024 * 1024;
/// Largest message body the broker stores.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Why a message with an empty (or all-blank) body is refused: the same
/// text on every surface that sends one.
pub const EMPTY_BODY: &str = "the message is empty";
/// Cap on a long-poll `recv`'s `wait_seconds`.
pub const MAX_WAIT_SECONDS: u64 = 180;
/// Default long-poll wait when `wait_seconds` is absent.
pub const DEFAULT_WAIT_SECONDS: u64 = 30;
/// Cap on a `recv`'s batch size.
pub const MAX_RECV_BATCH: u32 = 32;
/// Cap on the messages of one `send_batch`.
pub const MAX_SEND_BATCH: usize = 256;
/// Bounds on a `recv`'s `lease_seconds`.
pub const MIN_LEASE_SECONDS: u64 = 1;
pub const MAX_LEASE_SECONDS: u64 = 3600;
