//! The built-in delegate kinds, registered in one place: the [`register!`] line at the end of
//! this file. A kind lives in a file of its own that provides a [`Delegate`]: the conf
//! `type`s it serves and its validate, add, del and check. Its standalone binary
//! (`src/bin/plexus-<type>.rs`) is a three-line shim over [`crate::standalone::main`].

use crate::error::DelegateError;
use crate::owned::Added;
use crate::request::Request;

/// What a built-in kind's file provides.
pub struct Delegate {
    /// The conf `type`s it serves: the reference plugin's name, so a conf written for the
    /// reference plugin runs in-process, and its own binary's name.
    pub types: &'static [&'static str],
    /// Whether its pod interface is a virtual link that the kernel can delete together with
    /// the pod's other links, and whose DEL still does the rest of its work (IPAM release,
    /// host-side cleanup) when that link is gone. A physical device must be handed back by
    /// its own DEL instead.
    pub virtual_link: bool,
    /// Everything ADD checks of the conf before it creates anything; no side effects.
    pub validate: fn(&Request) -> Result<(), DelegateError>,
    pub add: fn(&Request) -> Result<Added, DelegateError>,
    pub del: fn(&Request) -> Result<(), DelegateError>,
    pub check: fn(&Request) -> Result<(), DelegateError>,
}

/// Declares [`Kind`] with one variant per registered file.
macro_rules! register {
    ($($kind:ident => $file:ident),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($kind),*
        }

        impl Kind {
            pub const ALL: &[Kind] = &[$(Kind::$kind),*];

            pub(crate) fn delegate(self) -> &'static Delegate {
                match self {
                    $(Kind::$kind => &crate::$file::DELEGATE),*
                }
            }
        }
    };
}

impl Kind {
    /// The built-in kind for a conf's `type`, if there is one.
    pub fn of(plugin_type: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.delegate().types.contains(&plugin_type))
    }

    /// See [`Delegate::virtual_link`].
    pub fn virtual_link(self) -> bool {
        self.delegate().virtual_link
    }
}

register! {
    Bridge => bridge,
    Macvlan => macvlan,
    Ipvlan => ipvlan,
    Vxlan => vxlan,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_names_one_kind() {
        for kind in Kind::ALL {
            for t in kind.delegate().types {
                assert_eq!(Kind::of(t), Some(*kind), "{t}");
            }
        }
        assert_eq!(Kind::of("ptp"), None);
        assert_eq!(Kind::of("plexus"), None);
    }
}
