//! The settings structs' shape, declared once: every field optional (unset:
//! the builder's default), (de)serialised with feature `serde`, unknown
//! fields refused, and merged field by field over a base (inheritance).
//! Ground floor: each pattern declares its settings with it, and
//! [`config`](crate::config) puts them together.

#[cfg(any(feature = "serde", test))]
pub(crate) mod duration;

use std::time::Duration;

/// A value laid over a base: a child's settings over its parent's.
pub(crate) trait Merge: Clone {
    /// `self` where it is set, `base` where it is not.
    fn over(self, base: &Self) -> Self;
}

/// A nested settings struct merges field by field; any other value that
/// is set replaces the base's.
impl<T: Merge> Merge for Option<T> {
    fn over(self, base: &Self) -> Self {
        match (self, base) {
            (Some(mine), Some(theirs)) => Some(mine.over(theirs)),
            (Some(mine), None) => Some(mine),
            (None, theirs) => theirs.clone(),
        }
    }
}

/// Values that replace the base's whole.
macro_rules! replaced {
    ($($T:ty),* $(,)?) => {
        $(impl Merge for $T {
            fn over(self, _: &Self) -> Self {
                self
            }
        })*
    };
}

replaced!(
    u32,
    u64,
    f64,
    bool,
    String,
    Duration,
    Vec<crate::error::ErrorKind>,
    crate::backoff::Jitter,
);

/// Declares a settings struct: the fields (each an `Option`), their
/// documentation, and `as "path"` for a field read with a serde helper
/// (durations: `crate::settings::duration::option`).
///
/// `inherited_whole [a, b]` names fields that make sense only together
/// (a window's kind and size, a backoff's growth): a child that sets any
/// of them takes none of them from its base.
macro_rules! settings_struct {
    (
        $(#[$meta:meta])*
        pub struct $Name:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident: $T:ty $(as $with:literal)?,
            )*
        }
        $(inherited_whole [$($whole:ident),*])?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
        #[non_exhaustive]
        pub struct $Name {
            $(
                $(#[$field_meta])*
                #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
                $(#[cfg_attr(feature = "serde", serde(with = $with))])?
                pub $field: Option<$T>,
            )*
        }

        impl $crate::settings::Merge for $Name {
            fn over(self, base: &Self) -> Self {
                #[allow(unused_mut)]
                let mut base = base.clone();
                $(
                    if false $(|| self.$whole.is_some())* {
                        $(base.$whole = None;)*
                    }
                )?
                Self {
                    $($field: $crate::settings::Merge::over(self.$field, &base.$field),)*
                }
            }
        }
    };
}
pub(crate) use settings_struct;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;
    use crate::error::ErrorKind;

    /// A value that is set replaces the base's whole; an unset one takes it.
    #[test]
    fn a_set_value_replaces_the_base_and_an_unset_one_takes_it() {
        fn check<T: Merge + PartialEq + std::fmt::Debug>(mine: T, base: T) {
            assert_eq!(
                Some(mine.clone()).over(&Some(base.clone())),
                Some(mine.clone())
            );
            assert_eq!(None.over(&Some(base.clone())), Some(base));
            assert_eq!(Some(mine.clone()).over(&None), Some(mine));
        }
        check(3u32, 4);
        check(3u64, 4);
        check(0.25f64, 0.5);
        check(true, false);
        check(String::from("mine"), String::from("base"));
        check(Duration::from_secs(1), Duration::from_secs(2));
        check(vec![ErrorKind::Elapsed], vec![ErrorKind::CircuitOpen]);
        check(Jitter::Equal, Jitter::Full);
        check(
            crate::backoff::BackoffKind::Linear,
            crate::backoff::BackoffKind::Constant,
        );
    }
}
