//! The closed vocabularies of the wire: error codes, history events, sync
//! actions and outcomes. Each serialises as the same string it always has;
//! the OpenAPI document lists the known values. A value this build does not
//! know (a newer server's) deserialises as `Other` rather than failing, so
//! an older client keeps working.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this build does not know (sent by a newer server).
            Other(String),
        }

        impl $name {
            /// Every value this build knows, as sent on the wire.
            pub const KNOWN: &'static [&'static str] = &[$($text),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Other(other) => other,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                match text {
                    $( $text => $name::$variant, )+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = String::deserialize(deserializer)?;
                Ok($name::from(text.as_str()))
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .enum_values(Some($name::KNOWN.iter().copied()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

vocabulary! {
    /// Machine-readable error code of every error response.
    pub enum ErrorCode {
        /// The request failed validation: see the fields.
        Invalid = "invalid",
        Unauthorized = "unauthorized",
        Forbidden = "forbidden",
        /// The organisation has as many instances as it may have.
        QuotaExceeded = "quota_exceeded",
        NotFound = "not_found",
        /// The instance is deleted.
        Deleted = "deleted",
        /// The instance's state does not allow the command.
        IllegalTransition = "illegal_transition",
        Conflict = "conflict",
        /// Another owner manages the instance.
        OwnedElsewhere = "owned_elsewhere",
        /// The control plane's database is unavailable: retry.
        Unavailable = "unavailable",
        Internal = "internal",
    }
}

vocabulary! {
    /// What happened in one entry of an instance's history: a state-machine
    /// event (`domain::Event`) or a record beside the state machine.
    pub enum HistoryEvent {
        Create = "Create",
        Update = "Update",
        Restart = "Restart",
        Stop = "Stop",
        Start = "Start",
        Delete = "Delete",
        Created = "Created",
        Updated = "Updated",
        Restarted = "Restarted",
        Stopped = "Stopped",
        Started = "Started",
        Deleted = "Deleted",
        Failed = "Failed",
        Recovered = "Recovered",
        /// A standby was promoted because the primary was gone.
        FailedOver = "FailedOver",
        /// The instance changed owner.
        Owner = "Owner",
        /// A backup was requested.
        Backup = "Backup",
        /// The data plane took a backup.
        BackedUp = "BackedUp",
        /// A backup failed.
        BackupFailed = "BackupFailed",
        /// A switchover was requested.
        Switchover = "Switchover",
        /// A standby became the primary by a switchover.
        SwitchedOver = "SwitchedOver",
        /// A switchover did not happen; the primary is unchanged.
        SwitchoverFailed = "SwitchoverFailed",
    }
}

impl From<domain::Event> for HistoryEvent {
    fn from(event: domain::Event) -> HistoryEvent {
        use domain::Event;
        match event {
            Event::Create => HistoryEvent::Create,
            Event::Update => HistoryEvent::Update,
            Event::Restart => HistoryEvent::Restart,
            Event::Stop => HistoryEvent::Stop,
            Event::Start => HistoryEvent::Start,
            Event::Delete => HistoryEvent::Delete,
            Event::Created => HistoryEvent::Created,
            Event::Updated => HistoryEvent::Updated,
            Event::Restarted => HistoryEvent::Restarted,
            Event::Stopped => HistoryEvent::Stopped,
            Event::Started => HistoryEvent::Started,
            Event::Deleted => HistoryEvent::Deleted,
            Event::Failed => HistoryEvent::Failed,
            Event::Recovered => HistoryEvent::Recovered,
            Event::FailedOver => HistoryEvent::FailedOver,
        }
    }
}

vocabulary! {
    /// What one sync did to one instance.
    pub enum SyncAction {
        Create = "create",
        Update = "update",
        Delete = "delete",
        /// No longer declared, kept (the source does not prune).
        Orphan = "orphan",
        /// Declared, but another owner manages it.
        Conflict = "conflict",
        /// The desired spec was sent again after drift.
        Heal = "heal",
        /// A delete waits for a later sync.
        DeleteDeferred = "delete-deferred",
    }
}

impl SyncAction {
    /// Whether the sync sent a change for the instance.
    pub fn acted(&self) -> bool {
        match self {
            SyncAction::Create | SyncAction::Update | SyncAction::Delete | SyncAction::Heal => true,
            SyncAction::Orphan | SyncAction::Conflict | SyncAction::DeleteDeferred => false,
            SyncAction::Other(_) => true,
        }
    }
}

vocabulary! {
    /// How one sync of a source ended.
    pub enum SyncOutcome {
        /// Changes were sent.
        Applied = "applied",
        /// Nothing to send.
        Unchanged = "unchanged",
        /// Invalid manifests: nothing applied.
        Rejected = "rejected",
        /// The fetch failed: nothing changed.
        FetchFailed = "fetch-failed",
        /// An unsafe prune was refused.
        Refused = "refused",
    }
}

impl SyncOutcome {
    /// Whether the commit synced is in force (its manifests were valid and
    /// applied, or there was nothing to apply).
    pub fn is_good(&self) -> bool {
        match self {
            SyncOutcome::Applied | SyncOutcome::Unchanged => true,
            SyncOutcome::Rejected
            | SyncOutcome::FetchFailed
            | SyncOutcome::Refused
            | SyncOutcome::Other(_) => false,
        }
    }

    /// Whether the sync failed (the CLI exits non-zero).
    pub fn is_failure(&self) -> bool {
        match self {
            SyncOutcome::Rejected | SyncOutcome::FetchFailed | SyncOutcome::Refused => true,
            SyncOutcome::Applied | SyncOutcome::Unchanged | SyncOutcome::Other(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_round_trip_through_json_unchanged() {
        for text in ErrorCode::KNOWN {
            let code: ErrorCode = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert!(!matches!(code, ErrorCode::Other(_)), "{text}");
            assert_eq!(
                serde_json::to_value(&code).unwrap(),
                serde_json::json!(text)
            );
        }
        for text in HistoryEvent::KNOWN {
            assert!(!matches!(HistoryEvent::from(*text), HistoryEvent::Other(_)));
        }
        for event in domain::Event::ALL {
            assert_eq!(HistoryEvent::from(event).as_str(), event.as_str());
        }
        for text in SyncAction::KNOWN.iter().chain(SyncOutcome::KNOWN) {
            let json = serde_json::json!(text);
            let a: SyncAction = serde_json::from_value(json.clone()).unwrap();
            let o: SyncOutcome = serde_json::from_value(json.clone()).unwrap();
            assert!(serde_json::to_value(&a).unwrap() == json);
            assert!(serde_json::to_value(&o).unwrap() == json);
        }
    }

    #[test]
    fn an_unknown_value_is_kept_not_refused() {
        let code: ErrorCode = serde_json::from_str("\"rate_limited\"").unwrap();
        assert_eq!(code, ErrorCode::Other("rate_limited".into()));
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"rate_limited\"");
        let event: HistoryEvent = serde_json::from_str("\"Resized\"").unwrap();
        assert_eq!(event.as_str(), "Resized");
    }

    #[test]
    fn the_schema_lists_the_known_values() {
        let schema = serde_json::to_value(<ErrorCode as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(
            schema["enum"].as_array().unwrap().len(),
            ErrorCode::KNOWN.len()
        );
    }
}
