//! Closed vocabularies of the YAML files (levels, modes, weekdays), as enums.
//!
//! Every enum here parses from its lower-case spelling and refuses anything
//! else with a message that lists the accepted words, so a typo in a site file
//! reads `"everything" is not one of none, patch, minor, major`.

use std::fmt;

/// Defines a string enum with serde, schemars, `Display` and `FromStr`, whose
/// parse error lists every accepted spelling.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every accepted spelling, in declaration order.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The spelling used in YAML files.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::model::words::UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(crate::model::words::UnknownWord {
                        found: other.to_owned(),
                        expected: Self::ALL,
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": Self::ALL })
            }
        }
    };
}

/// A word that is not in a closed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord {
    /// What the file said.
    pub found: String,
    /// What it may say.
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not one of {}",
            self.found,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownWord {}

words! {
    /// How far automatic upgrades may go (`opt_in.upgrades`, ceilings, defaults).
    UpgradeLevel { None = "none", Patch = "patch", Minor = "minor", Major = "major" }
}

words! {
    /// Which hot fixes a site takes (`opt_in.hotfixes`).
    HotfixLevel { None = "none", Critical = "critical", All = "all" }
}

words! {
    /// A level of change that `require_approval` can name.
    ChangeLevel { Hotfix = "hotfix", Patch = "patch", Minor = "minor", Major = "major" }
}

words! {
    /// What to do with a managed file whose content differs from the last rollback point.
    DriftMode { Preserve = "preserve", Revert = "revert", Block = "block" }
}

words! {
    /// How files are replaced on disk (SPEC §6.3).
    Layout { InPlace = "in_place", Symlink = "symlink" }
}

words! {
    /// When a site's data is captured before a change (SPEC §6.6).
    DataWhen { Migrations = "migrations", Always = "always" }
}

words! {
    /// What a `notify:` target hears about (SPEC §9).
    EventType {
        Failed = "failed",
        RolledBack = "rolled_back",
        Quarantined = "quarantined",
        Recovered = "recovered",
        ApprovalRequired = "approval_required",
        UpgradeAvailable = "upgrade_available",
        Preflight = "preflight",
        FailureMarker = "failure_marker",
        UntrustedSource = "untrusted_source",
        Drift = "drift",
    }
}

words! {
    /// A release's urgency; `security` may bypass windows and soak times.
    Urgency { Normal = "normal", Security = "security" }
}

words! {
    /// A fix's severity; `opt_in.hotfixes: critical` takes only `critical`.
    Severity { Critical = "critical", Normal = "normal" }
}

words! {
    /// What a fix does, which decides the opt-in it needs (SPEC §7).
    FixKind { Fix = "fix", Diagnostic = "diagnostic", Access = "access" }
}

words! {
    /// How `replace` treats whitespace in `find`.
    Whitespace { Loose = "loose", Exact = "exact" }
}

words! {
    /// How many targeted files a fix op needs to find applicable or applied.
    Expect { Some = "some", One = "one", Any = "any" }
}

words! {
    /// A day of the week in a maintenance window.
    Weekday { Mon = "mon", Tue = "tue", Wed = "wed", Thu = "thu", Fri = "fri", Sat = "sat", Sun = "sun" }
}

impl UpgradeLevel {
    /// The level of change this opt-in allows, as a [`ChangeLevel`] (`None` allows none).
    pub fn allows(self, change: ChangeLevel) -> bool {
        match change {
            ChangeLevel::Hotfix => true,
            ChangeLevel::Patch => self >= UpgradeLevel::Patch,
            ChangeLevel::Minor => self >= UpgradeLevel::Minor,
            ChangeLevel::Major => self >= UpgradeLevel::Major,
        }
    }
}

impl Weekday {
    /// The `jiff` weekday, for window arithmetic.
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        use jiff::civil::Weekday as W;
        match self {
            Self::Mon => W::Monday,
            Self::Tue => W::Tuesday,
            Self::Wed => W::Wednesday,
            Self::Thu => W::Thursday,
            Self::Fri => W::Friday,
            Self::Sat => W::Saturday,
            Self::Sun => W::Sunday,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_from_least_to_most() {
        assert!(UpgradeLevel::None < UpgradeLevel::Patch);
        assert!(UpgradeLevel::Minor < UpgradeLevel::Major);
        assert!(HotfixLevel::Critical < HotfixLevel::All);
        assert!(UpgradeLevel::Minor.allows(ChangeLevel::Patch));
        assert!(!UpgradeLevel::Minor.allows(ChangeLevel::Major));
    }

    #[test]
    fn unknown_word_lists_the_choices() {
        let err = "everything".parse::<UpgradeLevel>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""everything" is not one of none, patch, minor, major"#
        );
    }
}
