//! The platforms' rules a reply must meet before it is stored, checked here
//! rather than discovered from a Graph API error after the customer was kept
//! waiting:
//!
//! - the customer-service window, from the customer's last inbound message
//!   (the platform's time): 24 hours everywhere; outside it WhatsApp takes
//!   only approved templates, and Messenger/Instagram only the `HUMAN_AGENT`
//!   tag, up to 7 days, on a channel allowed to use it;
//! - text length: WhatsApp 4,096 characters, Messenger 2,000 characters,
//!   Instagram 1,000 bytes of UTF-8;
//! - what each platform can carry (templates are WhatsApp's; Instagram takes no
//!   documents; captions are WhatsApp's).
//!
//! Each broken rule has a stable code the API answers with (422).

use chrono::{DateTime, Duration, Utc};
use faro_proto::{conversations::v1 as pb, to_timestamp};

use crate::Error;

pub(crate) const STANDARD_WINDOW: Duration = Duration::hours(24);
pub(crate) const HUMAN_AGENT_WINDOW: Duration = Duration::days(7);
pub(crate) const HUMAN_AGENT: &str = "HUMAN_AGENT";

const WHATSAPP_TEXT_CHARS: usize = 4096;
const WHATSAPP_CAPTION_CHARS: usize = 1024;
const MESSENGER_TEXT_CHARS: usize = 2000;
const INSTAGRAM_TEXT_BYTES: usize = 1000;

/// What an agent sends, validated for shape (not yet for a platform).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Content {
    Text(String),
    Template {
        name: String,
        language: String,
        parameters: Vec<String>,
    },
    Media {
        kind: String,
        url: String,
        caption: String,
        filename: String,
    },
}

impl Content {
    /// One of text, template and media, well formed; a 400 otherwise.
    pub(crate) fn from_pb(c: &pb::ReplyContent) -> Result<Self, Error> {
        let given = [!c.text.is_empty(), c.template.is_some(), c.media.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(Error::invalid(
                "content needs exactly one of text, template and media",
            ));
        }
        if let Some(t) = &c.template {
            if t.name.is_empty()
                || t.name.len() > 512
                || t.language.is_empty()
                || t.language.len() > 20
            {
                return Err(Error::invalid(
                    "template needs a name (1..=512 bytes) and a language code (1..=20 bytes)",
                ));
            }
            if t.parameters.len() > 100 || t.parameters.iter().any(|p| p.len() > 4096) {
                return Err(Error::invalid(
                    "template takes at most 100 parameters of at most 4096 bytes",
                ));
            }
            return Ok(Self::Template {
                name: t.name.clone(),
                language: t.language.clone(),
                parameters: t.parameters.clone(),
            });
        }
        if let Some(m) = &c.media {
            if !["image", "video", "audio", "document"].contains(&m.kind.as_str()) {
                return Err(Error::invalid(
                    "media kind must be image, video, audio or document",
                ));
            }
            let url = url::Url::parse(&m.url)
                .map_err(|_| Error::invalid("media url must be an absolute http(s) URL"))?;
            if !matches!(url.scheme(), "https" | "http") || m.url.len() > 2048 {
                return Err(Error::invalid(
                    "media url must be an absolute http(s) URL of at most 2048 bytes",
                ));
            }
            if m.caption.len() > 8192 || m.filename.len() > 255 {
                return Err(Error::invalid("media caption or filename too long"));
            }
            return Ok(Self::Media {
                kind: m.kind.clone(),
                url: m.url.clone(),
                caption: m.caption.clone(),
                filename: m.filename.clone(),
            });
        }
        if c.text.contains('\0') || c.text.len() > 65_536 {
            return Err(Error::invalid(
                "text must be at most 65536 bytes without NUL",
            ));
        }
        Ok(Self::Text(c.text.clone()))
    }

    /// The stored message's type.
    pub(crate) fn message_type(&self) -> &str {
        match self {
            Self::Text(_) => "text",
            Self::Template { .. } => "template",
            Self::Media { kind, .. } => kind,
        }
    }
}

/// A broken rule: its code and what to do about it.
pub(crate) fn broken(code: &'static str, message: impl Into<String>) -> Error {
    Error::Rule {
        code,
        message: message.into(),
    }
}

/// The thread's window as the API shows it.
/// Whether replies on `channel` are bound by a customer-service window.
pub(crate) fn has_window(channel: &str) -> bool {
    matches!(channel, "whatsapp" | "facebook_messenger" | "instagram_dm")
}

pub(crate) fn window(
    channel: &str,
    last_inbound: Option<DateTime<Utc>>,
    human_agent: bool,
    now: DateTime<Utc>,
) -> pb::ReplyWindow {
    let left = |closes: DateTime<Utc>| (closes - now).num_seconds().max(0);
    let tagged = human_agent && channel != "whatsapp";
    let Some(last) = last_inbound else {
        return pb::ReplyWindow {
            human_agent_enabled: tagged,
            ..Default::default()
        };
    };
    let closes = last + STANDARD_WINDOW;
    let tag_closes = last + HUMAN_AGENT_WINDOW;
    pb::ReplyWindow {
        last_inbound_at: Some(to_timestamp(last)),
        closes_at: Some(to_timestamp(closes)),
        seconds_left: left(closes),
        human_agent_closes_at: tagged.then(|| to_timestamp(tag_closes)),
        human_agent_seconds_left: if tagged { left(tag_closes) } else { 0 },
        human_agent_enabled: tagged,
    }
}

/// Checks `content` against `channel`'s rules; the tag to send with (for
/// Messenger/Instagram past the standard window), or the broken rule.
pub(crate) fn check(
    channel: &str,
    content: &Content,
    last_inbound: Option<DateTime<Utc>>,
    human_agent: bool,
    now: DateTime<Utc>,
) -> Result<Option<&'static str>, Error> {
    let platform = match channel {
        "whatsapp" => "WhatsApp",
        "facebook_messenger" => "Messenger",
        "instagram_dm" => "Instagram",
        _ => {
            return Err(broken(
                "unsupported_channel",
                format!("replies are not supported on {channel}"),
            ));
        }
    };
    match (channel, content) {
        ("whatsapp", Content::Text(t)) if t.chars().count() > WHATSAPP_TEXT_CHARS => {
            return Err(broken(
                "text_too_long",
                format!("WhatsApp text is at most {WHATSAPP_TEXT_CHARS} characters"),
            ));
        }
        ("whatsapp", Content::Media { kind, caption, .. }) => {
            if caption.chars().count() > WHATSAPP_CAPTION_CHARS {
                return Err(broken(
                    "text_too_long",
                    format!("WhatsApp captions are at most {WHATSAPP_CAPTION_CHARS} characters"),
                ));
            }
            if kind == "audio" && !caption.is_empty() {
                return Err(broken(
                    "unsupported_content",
                    "WhatsApp audio takes no caption",
                ));
            }
        }
        ("facebook_messenger", Content::Text(t)) if t.chars().count() > MESSENGER_TEXT_CHARS => {
            return Err(broken(
                "text_too_long",
                format!("Messenger text is at most {MESSENGER_TEXT_CHARS} characters"),
            ));
        }
        ("instagram_dm", Content::Text(t)) if t.len() > INSTAGRAM_TEXT_BYTES => {
            return Err(broken(
                "text_too_long",
                format!("Instagram text is at most {INSTAGRAM_TEXT_BYTES} bytes of UTF-8"),
            ));
        }
        ("facebook_messenger" | "instagram_dm", Content::Template { .. }) => {
            return Err(broken(
                "unsupported_content",
                format!("{platform} has no message templates (they are WhatsApp's)"),
            ));
        }
        ("facebook_messenger" | "instagram_dm", Content::Media { kind, caption, .. }) => {
            if !caption.is_empty() {
                return Err(broken(
                    "unsupported_content",
                    format!("{platform} attachments take no caption: send the text apart"),
                ));
            }
            if channel == "instagram_dm" && kind == "document" {
                return Err(broken(
                    "unsupported_content",
                    "Instagram takes images, videos and audio, not documents",
                ));
            }
        }
        _ => {}
    }
    let open = last_inbound.is_some_and(|t| now - t < STANDARD_WINDOW);
    if open {
        return Ok(None);
    }
    if channel == "whatsapp" {
        if matches!(content, Content::Template { .. }) {
            return Ok(None);
        }
        return Err(broken(
            "window_closed",
            "outside WhatsApp's 24-hour customer service window only approved templates may be sent",
        ));
    }
    if !human_agent {
        return Err(broken(
            "window_closed",
            format!(
                "{platform}'s 24-hour messaging window is closed and this channel may not use the HUMAN_AGENT tag"
            ),
        ));
    }
    if last_inbound.is_some_and(|t| now - t < HUMAN_AGENT_WINDOW) {
        return Ok(Some(HUMAN_AGENT));
    }
    Err(broken(
        "human_agent_window_closed",
        format!(
            "{platform}'s HUMAN_AGENT tag allows replies up to 7 days after the customer's last message"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Content {
        Content::Text(s.to_owned())
    }

    fn code(r: Result<Option<&'static str>, Error>) -> &'static str {
        match r {
            Err(Error::Rule { code, .. }) => code,
            other => panic!("expected a broken rule, got {other:?}"),
        }
    }

    #[test]
    fn windows_per_platform() {
        let now = Utc::now();
        let recent = Some(now - Duration::hours(1));
        let old = Some(now - Duration::hours(30));
        let ancient = Some(now - Duration::days(8));
        let template = Content::Template {
            name: "t".into(),
            language: "en".into(),
            parameters: vec![],
        };
        assert_eq!(
            check("whatsapp", &text("hi"), recent, false, now).ok(),
            Some(None)
        );
        assert_eq!(
            code(check("whatsapp", &text("hi"), old, false, now)),
            "window_closed"
        );
        assert_eq!(
            code(check("whatsapp", &text("hi"), None, false, now)),
            "window_closed"
        );
        assert_eq!(
            check("whatsapp", &template, None, false, now).ok(),
            Some(None)
        );
        assert_eq!(
            code(check("facebook_messenger", &text("hi"), old, false, now)),
            "window_closed"
        );
        assert_eq!(
            check("facebook_messenger", &text("hi"), old, true, now).ok(),
            Some(Some(HUMAN_AGENT))
        );
        assert_eq!(
            code(check("instagram_dm", &text("hi"), ancient, true, now)),
            "human_agent_window_closed"
        );
        assert_eq!(
            code(check("sms", &text("hi"), recent, false, now)),
            "unsupported_channel"
        );
    }

    #[test]
    fn lengths_per_platform() {
        let now = Utc::now();
        let recent = Some(now - Duration::minutes(5));
        assert!(check("whatsapp", &text(&"é".repeat(4096)), recent, false, now).is_ok());
        assert_eq!(
            code(check(
                "whatsapp",
                &text(&"a".repeat(4097)),
                recent,
                false,
                now
            )),
            "text_too_long"
        );
        assert!(
            check(
                "facebook_messenger",
                &text(&"é".repeat(2000)),
                recent,
                false,
                now
            )
            .is_ok()
        );
        assert_eq!(
            code(check(
                "facebook_messenger",
                &text(&"a".repeat(2001)),
                recent,
                false,
                now
            )),
            "text_too_long"
        );
        // 500 two-byte characters are 1,000 bytes; 501 are over.
        assert!(check("instagram_dm", &text(&"é".repeat(500)), recent, false, now).is_ok());
        assert_eq!(
            code(check(
                "instagram_dm",
                &text(&"é".repeat(501)),
                recent,
                false,
                now
            )),
            "text_too_long"
        );
    }

    #[test]
    fn shows_time_left() {
        let now = Utc::now();
        let w = window(
            "facebook_messenger",
            Some(now - Duration::hours(23)),
            true,
            now,
        );
        assert!(
            (3590..=3600).contains(&w.seconds_left),
            "{}",
            w.seconds_left
        );
        assert!(w.human_agent_seconds_left > 6 * 86_400);
        let w = window("whatsapp", Some(now - Duration::hours(25)), true, now);
        assert_eq!((w.seconds_left, w.human_agent_enabled), (0, false));
    }
}
