//! Browser assets of hyperhive, embedded in the binary at build time.
//!
//! This crate owns what a browser loads: the shared palette (`palette.css`,
//! Catppuccin Mocha), the terminal component (`terminal.js`,
//! `window.HiveTerminal.create`) that both the dashboard and the per-agent
//! page render their live panes with, the helpers both pages share
//! (`page.js`, `window.HivePage`), and the operator's dashboard page
//! (`dashboard.html`, `.css`, `.js`). It has no dependencies and does no
//! I/O: servers look assets up with [`asset`] and serve them under
//! `/assets/<name>`, with [`CONTENT_SECURITY_POLICY`].
//!
//! Architecture invariant: no asset sets `innerHTML` or any other HTML
//! sink, and no page carries inline script, so text from agents is only
//! ever text (the tests below check both).

pub mod guard;

/// Colours, fonts and the terminal component's chrome.
pub const PALETTE_CSS: &str = include_str!("../assets/palette.css");
/// `window.HiveTerminal.create(root, {title, max})`: a sticky-bottom pane.
pub const TERMINAL_JS: &str = include_str!("../assets/terminal.js");
/// The dashboard's static shell.
pub const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
/// The dashboard's layout.
pub const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
/// The dashboard's single-page client.
pub const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
/// The task board section of the dashboard.
pub const BOARD_JS: &str = include_str!("../assets/board.js");
/// The per-agent page's static shell, served by core at `/agent/<name>/`
/// (never by the harness: nothing the agent controls is a document on the
/// dashboard's origin). Its URLs are relative to that prefix.
pub const AGENT_HTML: &str = include_str!("../assets/agent.html");
/// The per-agent page's layout.
pub const AGENT_CSS: &str = include_str!("../assets/agent.css");
/// The per-agent page's single-page client.
pub const AGENT_JS: &str = include_str!("../assets/agent.js");
/// `window.HivePage`: what every page shares — the element builder, the
/// clocks, the banner, the stream-then-snapshot sync.
pub const PAGE_JS: &str = include_str!("../assets/page.js");
/// `window.HiveText`: markdown to DOM (text nodes only) and helper events
/// as sentences, for agent output, inboxes and the message flow.
pub const TEXT_JS: &str = include_str!("../assets/text.js");
/// The agent page's rows for the codex engine's events (loaded before
/// `agent.js`, which asks it first).
pub const CODEX_JS: &str = include_str!("../assets/codex.js");
/// Both pages' icon (a browser asks for one; without it, a 404 per load).
pub const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// The policy both pages are served with: scripts and styles only from the
/// page's own origin (no inline script can run, whatever text gets in),
/// connections only back to it, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// File name, served as `/assets/<name>`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

const TEXT: Asset = Asset {
    name: "text.js",
    content_type: JS,
    body: TEXT_JS,
};

const PAGE: Asset = Asset {
    name: "page.js",
    content_type: JS,
    body: PAGE_JS,
};

const FAVICON: Asset = Asset {
    name: "favicon.svg",
    content_type: SVG,
    body: FAVICON_SVG,
};

/// Every file served under `/assets/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "palette.css",
        content_type: CSS,
        body: PALETTE_CSS,
    },
    Asset {
        name: "terminal.js",
        content_type: JS,
        body: TERMINAL_JS,
    },
    Asset {
        name: "dashboard.css",
        content_type: CSS,
        body: DASHBOARD_CSS,
    },
    Asset {
        name: "dashboard.js",
        content_type: JS,
        body: DASHBOARD_JS,
    },
    TEXT,
    PAGE,
    FAVICON,
    Asset {
        name: "board.js",
        content_type: JS,
        body: BOARD_JS,
    },
];

/// The asset called `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// Files the agent page loads from `assets/` (relative to
/// `/agent/<name>/`): its own, then the shared palette and terminal.
pub const AGENT_ASSETS: &[Asset] = &[
    Asset {
        name: "agent.css",
        content_type: CSS,
        body: AGENT_CSS,
    },
    Asset {
        name: "agent.js",
        content_type: JS,
        body: AGENT_JS,
    },
    Asset {
        name: "codex.js",
        content_type: JS,
        body: CODEX_JS,
    },
    Asset {
        name: "palette.css",
        content_type: CSS,
        body: PALETTE_CSS,
    },
    Asset {
        name: "terminal.js",
        content_type: JS,
        body: TERMINAL_JS,
    },
    TEXT,
    PAGE,
    FAVICON,
];

/// The agent page's asset called `name`, if there is one.
pub fn agent_asset(name: &str) -> Option<&'static Asset> {
    AGENT_ASSETS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `/assets/...` reference in the page names an embedded asset.
    #[test]
    fn the_page_references_only_embedded_assets() {
        let mut refs = 0;
        for piece in DASHBOARD_HTML.split("\"/assets/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(
                asset(name).is_some(),
                "{name} is referenced but not embedded"
            );
            refs += 1;
        }
        assert_eq!(refs, ASSETS.len(), "every asset is used by the page");
    }

    /// The agent page loads its files relative to `/agent/<name>/` (no
    /// leading slash: `/assets/x` would be the dashboard's), and each one is
    /// embedded; its script calls its endpoints relatively too.
    #[test]
    fn the_agent_page_is_relative_and_self_contained() {
        assert!(!AGENT_HTML.contains("\"/assets/"), "absolute asset URL");
        let mut refs = 0;
        for piece in AGENT_HTML.split("\"assets/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(agent_asset(name).is_some(), "{name} is not embedded");
            refs += 1;
        }
        assert_eq!(refs, AGENT_ASSETS.len(), "every agent asset is used");
        for absolute in ["'/api/", "'/events/", "\"/api/", "\"/events/"] {
            assert!(!AGENT_JS.contains(absolute), "agent.js uses {absolute}");
        }
        assert!(agent_asset("../Cargo.toml").is_none());
    }

    /// No inline script or handler attribute: the CSP forbids them anyway,
    /// and a page that needed them would break under it.
    #[test]
    fn the_pages_have_no_inline_script() {
        for page in [DASHBOARD_HTML, AGENT_HTML] {
            let html = page.to_lowercase();
            for tag in html.split("<script").skip(1) {
                let (attrs, rest) = tag.split_once('>').unwrap();
                assert!(attrs.contains("src="), "inline <script{attrs}>");
                assert!(rest.starts_with("</script>"), "script with a body");
            }
            for handler in [" onclick=", " onload=", " onerror=", " onsubmit=", "<style"] {
                assert!(!html.contains(handler), "inline {handler}");
            }
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    /// Untrusted text only ever reaches the page as text.
    #[test]
    fn no_html_sinks_in_scripts() {
        let agent_js = [("agent.js", AGENT_JS), ("codex.js", CODEX_JS)];
        let scripts = ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js"))
            .map(|a| (a.name, a.body));
        for (name, body) in scripts.chain(agent_js) {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "createContextualFragment",
                "DOMParser",
            ] {
                assert!(!body.contains(sink), "{name} uses {sink}");
            }
        }
    }

    #[test]
    fn assets_are_found_by_name() {
        assert_eq!(asset("dashboard.js").unwrap().content_type, JS);
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("").is_none());
    }
}
