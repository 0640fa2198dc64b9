//! Container output made plain text: terminal escape sequences removed.
//!
//! An agent's CLI colours its output for a terminal (`\x1b[2m…\x1b[0m`);
//! every surface that shows logs to something other than a terminal (the
//! CLI's `logs`, the dashboard's logs pane, the manager's `get_logs` tool,
//! where a model would read the escapes as text) gets the lines through
//! [`plain_text`], applied once where core reads them.

/// `line` without ANSI/VT escape sequences (CSI `ESC [ … final`, OSC
/// `ESC ] … BEL|ST`, two-byte `ESC x`) or other control characters; a tab
/// stays, a lone carriage return (a progress bar redrawing itself) keeps
/// only what was drawn last.
pub fn plain_text(line: &str) -> String {
    let line = line
        .rsplit('\r')
        .find(|part| !part.is_empty())
        .unwrap_or("");
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (and DCS, SOS, PM, APC): up to BEL or ESC \.
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // A two-byte sequence (`ESC (B`, `ESC =` …): one more char
                // for the charset designators.
                Some('(' | ')' | '*' | '+') => {
                    chars.next();
                }
                Some(_) | None => {}
            },
            // The 8-bit CSI.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::plain_text;

    #[test]
    fn strips_escapes() {
        for (raw, plain) in [
            ("\x1b[2mthinking\x1b[0m done", "thinking done"),
            ("\x1b[1;38;5;208mwarn\x1b[m: x", "warn: x"),
            ("\x1b]0;title\x07after", "after"),
            ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("\x1b(Bplain\x1b=", "plain"),
            ("10%\r50%\r100%", "100%"),
            ("tab\there\x00\x08", "tab\there"),
            ("\u{9b}31mred", "red"),
            ("unterminated \x1b[", "unterminated "),
            ("naïve ✓", "naïve ✓"),
        ] {
            assert_eq!(plain_text(raw), plain, "{raw:?}");
        }
    }
}
