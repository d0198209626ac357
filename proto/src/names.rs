//! The lowercase names FARO uses for enums in Postgres and JSON, in one place.

use crate::conversations::v1::{Channel, Direction, SenderType};

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
