//! The lowercase names FARO uses for enums in Postgres and JSON, in one place.

use crate::conversations::v1::{Channel, ConversationEventKind, Direction, SenderType};

/// `None` for unspecified.
pub fn channel_name(c: Channel) -> Option<&'static str> {
    Some(match c {
        Channel::Unspecified => return None,
        Channel::Whatsapp => "whatsapp",
        Channel::FacebookMessenger => "facebook_messenger",
        Channel::InstagramDm => "instagram_dm",
        Channel::GoogleBusiness => "google_business",
        Channel::Sms => "sms",
        Channel::Email => "email",
    })
}

pub fn channel_from_name(s: &str) -> Channel {
    match s {
        "whatsapp" => Channel::Whatsapp,
        "facebook_messenger" => Channel::FacebookMessenger,
        "instagram_dm" => Channel::InstagramDm,
        "google_business" => Channel::GoogleBusiness,
        "sms" => Channel::Sms,
        "email" => Channel::Email,
        _ => Channel::Unspecified,
    }
}

pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Unspecified => "unspecified",
    }
}

pub fn sender_type_name(s: SenderType) -> &'static str {
    match s {
        SenderType::Customer => "customer",
        SenderType::Agent => "agent",
        SenderType::Unspecified => "unspecified",
    }
}

/// The name of a conversation event kind; `None` for unspecified.
pub fn conversation_event_kind_name(k: ConversationEventKind) -> Option<&'static str> {
    Some(match k {
        ConversationEventKind::Unspecified => return None,
        ConversationEventKind::PassThreadControl => "pass_thread_control",
        ConversationEventKind::TakeThreadControl => "take_thread_control",
        ConversationEventKind::RequestThreadControl => "request_thread_control",
        ConversationEventKind::AppRoles => "app_roles",
        ConversationEventKind::AccountLinking => "account_linking",
        ConversationEventKind::Optin => "optin",
        ConversationEventKind::GamePlay => "game_play",
        ConversationEventKind::PolicyEnforcement => "policy_enforcement",
        ConversationEventKind::Unknown => "unknown",
    })
}

pub fn conversation_event_kind_from_name(s: &str) -> ConversationEventKind {
    [
        ConversationEventKind::PassThreadControl,
        ConversationEventKind::TakeThreadControl,
        ConversationEventKind::RequestThreadControl,
        ConversationEventKind::AppRoles,
        ConversationEventKind::AccountLinking,
        ConversationEventKind::Optin,
        ConversationEventKind::GamePlay,
        ConversationEventKind::PolicyEnforcement,
        ConversationEventKind::Unknown,
    ]
    .into_iter()
    .find(|k| conversation_event_kind_name(*k) == Some(s))
    .unwrap_or(ConversationEventKind::Unspecified)
}
