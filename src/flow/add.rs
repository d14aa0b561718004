//! ADD: resolve, plan, check every attachment, journal the plan, invoke each attachment in
//! order, report. Nothing is created before the whole plan has passed its checks; any
//! failure after the plan is journaled aborts the transaction, which undoes what was
//! started, in reverse.

use super::{Error, Request};
use crate::invoke::{Chain, Container, InvokeError, Runner, Target, pod};
use crate::journal::undo::Undo;
use crate::journal::{AddTransaction, Entry, Journal, Record};
use crate::plan::Attachment;
use crate::report::{self, AttachmentReport, Report};
use crate::resolve::{self, Purpose, Resolved};
use crate::store::{NetworkStore, Pod, PodEvent};
use cni::CniResult;
use std::time::Instant;

pub(super) fn add(req: &Request, store: Option<&dyn NetworkStore>) -> Result<Report, Error> {
    let ifname = req.ifname()?.as_str();
    // Before the journal dir or anything else is created: a node whose cluster network is
    // not up yet gets code 11 and no trace of the attempt.
    crate::autoconf::wait_for_conf(&req.conf)?;
    let journal = Journal::open(&req.conf.cni_dir)?;
    let lock = journal.lock(req.container_id(), req.lock_wait())?;
    journal.refuse_duplicate(&lock, ifname)?;
    let resolved = resolve::resolve(&req.conf, store, &req.pod, Purpose::Attach)?;
    let plan = Plan::new(req, &resolved)?;
    journal.refuse_taken(&lock, ifname, plan.all().map(|a| a.ifname.as_str()))?;
    let runner = Runner::new(&req.conf, &req.env.cni_path);
    let ctx = Add {
        req,
        runner: &runner,
        store,
        pod: resolved.pod.as_ref(),
    };
    let chains = ctx.prepare(&plan)?;
    pod::refuse_existing_interfaces(&runner, req.env.netns.as_deref(), &plan.attachments)?;
    let records = plan
        .attachments
        .iter()
        .map(|a| Record::planned(a, false))
        .chain(plan.auxiliary.iter().map(|a| Record::planned(a, true)))
        .collect();
    let entry = Entry::planned(
        &req.env,
        &req.pod,
        &req.conf.cni_version_str,
        ifname,
        records,
    );
    let mut tx = AddTransaction::begin(&journal, lock, entry)?;
    cni::fault::point("add-after-journal");
    match ctx.attach(&mut tx, &plan, &chains) {
        Ok(report) => {
            tx.commit();
            // Journaled as done, but the runtime never sees the result: it DELs.
            cni::fault::point("add-before-result");
            Ok(report)
        }
        Err(e) => {
            tx.abort(&Undo {
                runner: &runner,
                netns: req.env.netns.as_deref(),
                policy: req.conf.del_policy,
            });
            Err(e)
        }
    }
}

/// The plan of one ADD: the attachments in order, then the auxiliary chain.
struct Plan {
    attachments: Vec<Attachment>,
    auxiliary: Option<Attachment>,
}

impl Plan {
    fn new(req: &Request, resolved: &Resolved) -> Result<Plan, Error> {
        let attachments = super::plan(req, resolved)?;
        let auxiliary = match (&resolved.auxiliary, attachments.first()) {
            (Some(list), Some(cluster)) => Some(crate::plan::auxiliary(cluster, list)),
            _ => None,
        };
        Ok(Plan {
            attachments,
            auxiliary,
        })
    }

    fn all(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.iter().chain(&self.auxiliary)
    }
}

/// The chains of the plan, every one checked.
struct Chains<'p> {
    attachments: Vec<Chain<'p>>,
    auxiliary: Option<Chain<'p>>,
}

/// What one ADD works with.
struct Add<'a> {
    req: &'a Request,
    runner: &'a Runner<'a>,
    store: Option<&'a dyn NetworkStore>,
    pod: Option<&'a Pod>,
}

impl<'a> Add<'a> {
    fn target(&'a self, a: &'a Attachment) -> Target<'a> {
        let container = Container {
            id: self.req.container_id(),
            netns: self.req.env.netns.as_deref(),
            ifname: a.ifname.as_str(),
            cni_args: &a.cni_args,
            owned: &[],
        };
        Target::new(self.runner, &a.network, container)
    }

    /// Every attachment's chain, found and checked before anything is created: a bad third
    /// network fails the ADD with nothing to undo.
    fn prepare<'p>(&'a self, plan: &'p Plan) -> Result<Chains<'p>, Error> {
        let mut attachments = Vec::with_capacity(plan.attachments.len());
        for a in &plan.attachments {
            let chain = Chain::prepare(&a.conf, &self.target(a)).inspect_err(|e| {
                self.attach_failed(a, e, "ADD refused before anything was created")
            })?;
            attachments.push(chain);
        }
        let auxiliary = match &plan.auxiliary {
            Some(a) => Some(Chain::prepare(&a.conf, &self.target(a))?),
            None => None,
        };
        Ok(Chains {
            attachments,
            auxiliary,
        })
    }

    /// Invokes the plan, then reports; any error leaves the transaction to be aborted.
    fn attach(
        &self,
        tx: &mut AddTransaction,
        plan: &Plan,
        chains: &Chains,
    ) -> Result<Report, Error> {
        let mut results: Vec<CniResult> = Vec::with_capacity(plan.attachments.len());
        let mut reports = Vec::with_capacity(plan.attachments.len());
        for (i, (a, chain)) in plan.attachments.iter().zip(&chains.attachments).enumerate() {
            let started = Instant::now();
            let result = self.run(tx, i, a, chain, None)?;
            tracing::debug!(network = %a.network, ifname = %a.ifname, micros = started.elapsed().as_micros() as u64, "attachment added");
            reports.push(AttachmentReport::new(a, &result, started.elapsed()));
            results.push(result);
            cni::fault::point("add-between-attachments");
        }
        pod::apply_default_routes(
            self.runner,
            self.req.env.netns.as_deref(),
            &plan.attachments,
            &mut results,
        )?;
        tx.rewrite_results(&results);
        if let (Some(a), Some(chain)) = (&plan.auxiliary, &chains.auxiliary) {
            self.run(tx, plan.attachments.len(), a, chain, results.first())?;
        }
        let network_status = report::pod_status(&plan.attachments, &results);
        if let Some(ns) = &network_status {
            tracing::info!(pod = %format!("{}/{}", self.req.pod.namespace(), self.req.pod.name.as_deref().unwrap_or_default()), network_status = %ns, "attached");
        }
        tx.report(network_status.clone())?;
        cni::fault::point("add-before-status");
        self.publish(network_status.as_ref(), &reports)?;
        Ok(Report {
            stdout: Some(report::result(&self.req.conf, &results)?),
            attachments: reports,
            network_status,
        })
    }

    /// Attachment `i`, marked started before and done (with its result) after.
    fn run(
        &self,
        tx: &mut AddTransaction,
        i: usize,
        a: &Attachment,
        chain: &Chain,
        prev: Option<&CniResult>,
    ) -> Result<CniResult, Error> {
        tx.start(i);
        match chain.add(&self.target(a), prev) {
            Ok(added) => {
                let result = added.result.clone();
                tx.done(i, added);
                Ok(result)
            }
            Err(e) => {
                tx.failed(i, &e);
                if tx.records()[i].auxiliary {
                    tracing::error!(chain = %a.network, error = %e, "auxiliary chain failed, rolling back");
                } else {
                    self.attach_failed(a, &e, "ADD failed, rolling back");
                }
                Err(e.into())
            }
        }
    }

    /// A network that could not be attached is an event on the pod; `what` says what
    /// happens to the rest of the ADD.
    fn attach_failed(&self, a: &Attachment, e: &InvokeError, what: &str) {
        tracing::error!(network = %a.network, error = %e, "{what}");
        self.event(PodEvent {
            reason: "AttachFailed".into(),
            message: format!("network {} on {}: {e}", a.network, a.ifname),
            warning: true,
        });
    }

    fn event(&self, event: PodEvent) {
        if let (Some(store), Some(pod)) = (self.store, self.pod)
            && let Err(e) = store.event(pod, &event)
        {
            tracing::warn!(error = %e, "recording event failed");
        }
    }

    /// The network-status onto the pod, and an event per attachment. A pod whose status
    /// cannot be written would run with networks nobody can see: all-or-nothing covers the
    /// status too (the store tolerates a pod that is gone).
    fn publish(
        &self,
        network_status: Option<&serde_json::Value>,
        reports: &[AttachmentReport],
    ) -> Result<(), Error> {
        let (Some(store), Some(pod), Some(ns)) = (self.store, self.pod, network_status) else {
            return Ok(());
        };
        store
            .publish_status(&pod.namespace, &pod.name, &ns.to_string())
            .inspect_err(
                |e| tracing::error!(error = %e, "publishing network-status failed, rolling back"),
            )?;
        for r in reports {
            self.event(PodEvent {
                reason: "AddedInterface".into(),
                message: format!("Add {} [{}] from {}", r.ifname, r.ips.join(","), r.network),
                warning: false,
            });
        }
        Ok(())
    }
}
