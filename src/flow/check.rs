//! CHECK: every delegate's CHECK with its cached result; a delegate that finds its
//! interface, address or route gone fails it.

use super::{Error, Request};
use crate::invoke::{self, Runner, Target};
use crate::journal::{Journal, JournalError, Lookup, State};

pub(super) fn check(req: &Request) -> Result<(), Error> {
    let ifname = req.ifname()?.as_str();
    let journal = Journal::open(&req.conf.cni_dir)?;
    let lock = journal.lock(req.container_id(), req.lock_wait())?;
    let lookup = journal.read(&lock, ifname);
    journal.release(lock);
    let unknown = |ifname: &str| JournalError::Unknown {
        container_id: req.container_id().to_string(),
        ifname: ifname.to_string(),
    };
    let entry = match lookup? {
        Lookup::Found(e) => e,
        Lookup::Missing | Lookup::Corrupt(_) => return Err(unknown(ifname).into()),
    };
    let runner = Runner::new(&req.conf, &req.env.cni_path);
    for a in &entry.attachments {
        if a.state != State::Added {
            return Err(unknown(&a.ifname).into());
        }
        let (Some(list), Some(prev)) = a.parts() else {
            continue;
        };
        let container = a.container(req.container_id(), req.env.netns.as_deref());
        let t = Target::new(&runner, &a.network, container);
        if !invoke::check(&list, &t, &prev)? {
            tracing::info!(network = %a.network, "CHECK skipped: delegate predates 0.4.0 or disableCheck");
        }
    }
    Ok(())
}
