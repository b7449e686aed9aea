//! The consume loop: one connection to one broker, one durable queue bound to every
//! `[[trigger]]` topic. Deliveries are taken in batches (what the broker has sent, up to the
//! prefetch window), checked, handed to the handler coalesced, and acked to the broker only
//! once the handler accepted them; a crash before that redelivers them. Broker restarts and
//! network loss end a session; the next one starts after a bounded backoff.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ssh_key::PrivateKey;

use super::config::{Broker, ListenConfig, TriggerKind};
use super::gate::{AdmittedTrigger, Gate, Refusal, Route};
use super::handoff::{Handler, HandoffAnswer};
use super::state::{self, Counters, PendingHint, Seen};
use super::{log, quoted};
use crate::bus::amqp::{AmqpError, Backoff, Client, Delivery, Outgoing};
use crate::bus::envelope::{self, AckResult, Envelope, MAX_ENVELOPE_LEN};
use crate::request::Request;

/// Unacked deliveries the broker may send at once: what one batch can coalesce, and what
/// bounds the listener's memory (each is at most the broker's message size limit).
pub const PREFETCH: u16 = 2048;
/// Distinct requests of one module handed over at once; past that the module is synced whole.
const MAX_HANDOFFS: usize = 8;
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);
/// A session that lasted this long starts the next reconnect from the shortest wait again; a
/// broker (or a proxy) that accepts and then drops every connection sees the backoff grow.
const STABLE_SESSION: Duration = Duration::from_secs(60);
/// Sessions in a row that reached the queue and were lost before they were stable, after which
/// the queue is taken one message at a time (see [`Daemon::careful`]).
const CAREFUL_AFTER: u32 = 2;
const MAX_HINT_RETRY: Duration = Duration::from_secs(300);

/// Why a session ended.
enum End {
    /// Retrying cannot help (a config error): exit 78.
    Fatal(String),
    /// The broker went away or refused: reconnect after a backoff.
    Lost(String),
}

fn classify(e: AmqpError) -> End {
    match e {
        AmqpError::Config(m) => End::Fatal(m),
        other => End::Lost(other.to_string()),
    }
}

pub struct Daemon {
    cfg: ListenConfig,
    broker: Broker,
    gate: Gate,
    handler: Handler,
    seen: Seen,
    hints: Vec<PendingHint>,
    ack_key: Option<PrivateKey>,
    delta: Counters,
    /// The current session declared the queue (got as far as the broker's side).
    reached_queue: bool,
    /// Sessions in a row that reached the queue and were lost before [`STABLE_SESSION`].
    unstable: u32,
    /// The last session ended while it fetched the queue's head one message at a time: that
    /// message stops the client (see [`Daemon::careful`]) and is discarded next.
    head_suspect: bool,
}

impl Daemon {
    pub fn new(
        cfg: ListenConfig,
        gate: Gate,
        ack_key: Option<PrivateKey>,
    ) -> Result<Daemon, (i32, String)> {
        let broker = cfg.broker.clone().ok_or_else(|| {
            (
                78,
                format!(
                    "{}: no [broker]: the daemon needs one (--stdin works without)",
                    cfg.path.display()
                ),
            )
        })?;
        state::ensure_dir(&cfg.state_dir).map_err(|e| state::dir_failure(&cfg.state_dir, &e))?;
        let seen = {
            let _l = state::lock(&cfg.state_dir)
                .map_err(|e| (75, format!("state dir {}: {e}", cfg.state_dir.display())))?;
            Seen::open(&cfg.state_dir, cfg.max_seen)
                .map_err(|e| (75, format!("state dir {}: {e}", cfg.state_dir.display())))?
        };
        let hints = state::read_hints(&cfg.state_dir);
        Ok(Daemon {
            handler: Handler::new(cfg.handler.as_deref(), &cfg.handler_config),
            broker,
            gate,
            seen,
            hints,
            ack_key,
            delta: Counters::default(),
            reached_queue: false,
            unstable: 0,
            head_suspect: false,
            cfg,
        })
    }

    pub fn run(mut self) -> i32 {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                log(&format!("error: cannot start the runtime: {e}"));
                return 75;
            }
        };
        let code = rt.block_on(self.main_loop());
        // A hand-off still running in a blocking thread is the handler's to finish.
        rt.shutdown_timeout(Duration::from_millis(100));
        code
    }

    async fn main_loop(&mut self) -> i32 {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log("error: cannot install signal handlers");
            return 75;
        };
        let mut backoff = Backoff::new(MAX_RECONNECT_WAIT);
        loop {
            let began = std::time::Instant::now();
            let end = tokio::select! {
                end = self.session() => end,
                _ = term.recv() => return self.stop("SIGTERM"),
                _ = int.recv() => return self.stop("SIGINT"),
            };
            match end {
                End::Fatal(m) => {
                    log(&format!("error: {m}"));
                    self.flush(Some("stopped"));
                    return 78;
                }
                End::Lost(m) => {
                    if began.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                        self.unstable = 0;
                    } else if self.reached_queue {
                        self.unstable += 1;
                    }
                    let wait = backoff.next_delay();
                    log(&format!(
                        "broker lost: {}; reconnecting in {}",
                        quoted(&m),
                        humantime::format_duration(wait)
                    ));
                    self.flush(Some("reconnecting"));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = term.recv() => return self.stop("SIGTERM"),
                        _ = int.recv() => return self.stop("SIGINT"),
                    }
                }
            }
        }
    }

    fn stop(&mut self, why: &str) -> i32 {
        log(&format!("stopping on {why}"));
        self.flush(Some("stopped"));
        0
    }

    fn flush(&mut self, broker: Option<&str>) {
        let delta = std::mem::take(&mut self.delta);
        if let Err(e) = state::add_status(&self.cfg.state_dir, &delta, broker) {
            log(&format!("warning: cannot write status: {e}"));
            self.delta = delta;
        }
    }

    fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.cfg.triggers.iter().map(|t| t.topic.clone()).collect();
        t.dedup();
        t
    }

    async fn session(&mut self) -> End {
        self.reached_queue = false;
        let name = format!(
            "mirrorpush-listen {}",
            self.cfg.mirror.as_ref().map_or("", |m| m.as_str())
        );
        let client = match Client::connect(&self.broker.connection, name.trim()).await {
            Ok(c) => Arc::new(c),
            Err(e) => return classify(e),
        };
        if let Err(e) = client
            .declare_queue(&self.broker.queue, &self.broker.exchange, &self.topics())
            .await
        {
            return classify(e);
        }
        self.reached_queue = true;
        if std::mem::take(&mut self.head_suspect) {
            self.delta.refuse("undecodable");
            log(&format!(
                "refused reason=undecodable detail={}",
                quoted(
                    "discarded the message at the head of the queue unread: fetching it stopped \
                     the AMQP client (its properties are not valid AMQP, e.g. a short string \
                     that is not UTF-8)"
                )
            ));
            self.flush(None);
            // The broker drops it as it sends it; decoding it then ends this connection.
            return match client.discard_head(&self.broker.queue).await {
                Ok(_) => End::Lost("discarded an undecodable message".into()),
                Err(e) => End::Lost(format!("while discarding an undecodable message: {e}")),
            };
        }
        if self.unstable >= CAREFUL_AFTER {
            if let Err(end) = self.careful(&client).await {
                return end;
            }
            self.unstable = 0;
        }
        let mut consumer = match client.consume(&self.broker.queue, PREFETCH).await {
            Ok(c) => c,
            Err(e) => return classify(e),
        };
        log(&format!(
            "connected queue={} exchange={} topics={}",
            quoted(&self.broker.queue),
            quoted(&self.broker.exchange),
            self.topics().len()
        ));
        self.flush(Some("connected"));
        loop {
            let due = self.next_hint_in();
            tokio::select! {
                d = consumer.recv() => {
                    let Some(d) = d else {
                        return End::Lost("the broker closed the channel".into());
                    };
                    let mut batch = vec![d];
                    while batch.len() < usize::from(PREFETCH) {
                        match consumer.try_recv() {
                            Some(d) => batch.push(d),
                            None => break,
                        }
                    }
                    if let Err(end) = self.batch(&client, batch).await {
                        return end;
                    }
                }
                _ = tokio::time::sleep(due.unwrap_or(Duration::from_secs(3600))), if due.is_some() => {
                    self.run_due_hints().await;
                }
                _ = client.closed() => return End::Lost("connection lost".into()),
            }
        }
    }

    /// Takes the queue one message at a time (`basic.get`) until it is empty. Used after
    /// sessions that kept ending soon after they reached the queue: a message this client
    /// cannot decode (a property that is not valid AMQP) ends every session it is delivered
    /// in, and is redelivered, with everything before it in the prefetch window, forever. One
    /// at a time, everything before it is handled and acked, and when a fetch itself ends the
    /// connection, the message at the head is the one: the next session discards it unread.
    async fn careful(&mut self, client: &Arc<Client>) -> Result<(), End> {
        log(&format!(
            "connected queue={} careful: one message at a time after {} sessions lost early",
            quoted(&self.broker.queue),
            self.unstable
        ));
        loop {
            let got = tokio::select! {
                got = client.get(&self.broker.queue) => got,
                _ = client.closed() => Err(AmqpError::Connection("connection lost".into())),
            };
            match got {
                Ok(None) => return Ok(()),
                Ok(Some(d)) => self.batch(client, vec![d]).await?,
                Err(e) => {
                    self.head_suspect = true;
                    return Err(End::Lost(format!(
                        "the connection ended while the head of the queue was fetched: {e}"
                    )));
                }
            }
        }
    }

    /// One batch of deliveries, in four steps: decide each, record hints, hand the accepted
    /// requests over (coalesced), then remember the ids and ack.
    async fn batch(&mut self, client: &Arc<Client>, batch: Vec<Delivery>) -> Result<(), End> {
        let now = SystemTime::now();
        let mut accepted: Vec<(u64, AdmittedTrigger)> = Vec::new();
        let mut refused: Vec<(u64, Refusal)> = Vec::new();
        let mut hint_tags = Vec::new();
        let mut already: Vec<(u64, AdmittedTrigger)> = Vec::new();
        {
            let _l = state::lock(&self.cfg.state_dir)
                .map_err(|e| End::Lost(format!("state dir: {e}")))?;
            if let Err(e) = self.seen.refresh() {
                return Err(End::Lost(format!("state dir: {e}")));
            }
            let mut ids = HashSet::new();
            let room = self.seen.room(now);
            for d in batch {
                match self.gate.route(&d.routing_key) {
                    Route::None => refused.push((
                        d.tag,
                        Refusal::new(
                            "unrouted",
                            format!("no [[trigger]] topic matches {}", quoted(&d.routing_key)),
                            None,
                        ),
                    )),
                    Route::Hint(i) => {
                        self.record_hint(i, &d.routing_key, now);
                        hint_tags.push(d.tag);
                    }
                    Route::Signed if d.body.len() > MAX_ENVELOPE_LEN => refused.push((
                        d.tag,
                        Refusal::new(
                            "too-large",
                            format!("{} bytes, the limit is {MAX_ENVELOPE_LEN}", d.body.len()),
                            None,
                        ),
                    )),
                    Route::Signed => match self.gate.check(&d.body, Some(&d.routing_key), now) {
                        Err(r) => refused.push((d.tag, r)),
                        Ok(a) => {
                            let id = a.verified.trigger.id.to_string();
                            if d.redelivered && self.seen.contains(&id, now) {
                                // Our own: handed over before a crash or a lost connection
                                // kept its broker ack from arriving. Not run again.
                                log(&format!(
                                    "already handed over id={id}: redelivered, acked without a second run"
                                ));
                                already.push((d.tag, a));
                            } else if self.seen.contains(&id, now) || ids.contains(&id) {
                                refused.push((
                                    d.tag,
                                    Refusal::new(
                                        "replay",
                                        "this id was already accepted",
                                        Some(id),
                                    ),
                                ));
                            } else if ids.len() >= room {
                                refused.push((
                                    d.tag,
                                    Refusal::new(
                                        "memory-full",
                                        format!(
                                            "{} ids remembered (max_seen): refused rather than forget one early",
                                            self.cfg.max_seen
                                        ),
                                        Some(id),
                                    ),
                                ));
                            } else {
                                log(&format!(
                                    "accepted id={id} origin={} key={} request={} routing_key={}{}",
                                    a.verified.trigger.origin,
                                    a.verified.key,
                                    quoted(&a.verified.trigger.request.to_string()),
                                    quoted(&d.routing_key),
                                    if d.redelivered { " redelivered" } else { "" }
                                ));
                                ids.insert(id);
                                accepted.push((d.tag, a));
                            }
                        }
                    },
                }
            }
        }
        if !hint_tags.is_empty() {
            // A hint is acked once it is on disk: a restart still runs it.
            if let Err(e) = state::write_hints(&self.cfg.state_dir, &self.hints) {
                return Err(End::Lost(format!("cannot record hints: {e}")));
            }
            for tag in hint_tags {
                client.ack(tag).await.map_err(classify)?;
            }
        }
        for (tag, r) in &refused {
            self.refuse(r, None);
            client.reject(*tag, false).await.map_err(classify)?;
        }
        if !already.is_empty() {
            let now = SystemTime::now();
            let mut acks = Vec::new();
            for (tag, a) in already {
                client.ack(tag).await.map_err(classify)?;
                let detail = "handed over before a reconnect".to_owned();
                acks.push((tag, a.verified.trigger, AckResult::Accepted, detail));
            }
            self.publish_acks(client, acks, now, now).await;
        }
        if !accepted.is_empty() {
            self.hand_over(client, accepted).await?;
        }
        self.flush(None);
        Ok(())
    }

    fn refuse(&mut self, r: &Refusal, routing_key: Option<&str>) {
        self.delta.refuse(r.reason);
        log(&format!(
            "refused reason={} id={}{} detail={}",
            r.reason,
            r.id.as_deref().unwrap_or("-"),
            routing_key.map_or(String::new(), |k| format!(" routing_key={}", quoted(k))),
            quoted(&r.detail)
        ));
    }

    async fn hand_over(
        &mut self,
        client: &Arc<Client>,
        accepted: Vec<(u64, AdmittedTrigger)>,
    ) -> Result<(), End> {
        let requests = coalesce(accepted.iter().map(|(_, a)| &a.verified.trigger.request));
        let started = SystemTime::now();
        let mut answers: BTreeMap<String, HandoffAnswer> = BTreeMap::new();
        let mut todo = requests.clone();
        let mut backoff = Backoff::new(Duration::from_secs(60));
        while !todo.is_empty() {
            let mut set = tokio::task::JoinSet::new();
            for r in todo.drain(..) {
                let h = self.handler.clone();
                set.spawn_blocking(move || {
                    // By the module's mode: a detach module's master hears `accepted` at once.
                    let a = h.sync(&r, true);
                    (r, a)
                });
            }
            self.delta.handoffs += set.len() as u64;
            while let Some(res) = set.join_next().await {
                let Ok((r, a)) = res else { continue };
                log(&format!(
                    "handoff request={} answer={} detail={}",
                    quoted(&r.to_string()),
                    a.word(),
                    quoted(a.detail())
                ));
                match a {
                    HandoffAnswer::Retry(_) => todo.push(r),
                    other => {
                        answers.insert(r.to_string(), other);
                    }
                }
            }
            if !todo.is_empty() {
                let wait = backoff.next_delay();
                log(&format!(
                    "handler asked to retry later: again in {}",
                    humantime::format_duration(wait)
                ));
                self.flush(None);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = client.closed() => return Err(End::Lost("connection lost while waiting to retry".into())),
                }
            }
        }
        let ended = SystemTime::now();
        let mut remember = Vec::new();
        let mut acks = Vec::new();
        let mut rejects = Vec::new();
        for (tag, a) in accepted {
            let t = &a.verified.trigger;
            let answer = requests
                .iter()
                .find(|r| covers(r, &t.request))
                .and_then(|r| answers.get(&r.to_string()));
            let result = match answer {
                Some(HandoffAnswer::Synced(_)) => AckResult::Synced,
                Some(HandoffAnswer::Accepted(_)) => AckResult::Accepted,
                Some(HandoffAnswer::Failed(_)) => AckResult::Failed,
                Some(HandoffAnswer::Refused(code, why)) => {
                    let r = Refusal::new(
                        if *code == 64 {
                            "handler-64"
                        } else {
                            "handler-77"
                        },
                        why.clone(),
                        Some(t.id.to_string()),
                    );
                    rejects.push((tag, r));
                    continue;
                }
                Some(HandoffAnswer::Retry(_)) | None => continue,
            };
            if result == AckResult::Failed {
                self.delta.failed_runs += 1;
            }
            self.delta.accepted += 1;
            remember.push((t.id.to_string(), a.remember_until));
            let detail = answer.map_or("", HandoffAnswer::detail).to_owned();
            acks.push((tag, t.clone(), result, detail));
        }
        // Remember the ids before acking: a crash in between makes a redelivery a refused
        // replay, never a second run.
        {
            let _l = state::lock(&self.cfg.state_dir)
                .map_err(|e| End::Lost(format!("state dir: {e}")))?;
            self.seen
                .record(&remember, SystemTime::now())
                .map_err(|e| End::Lost(format!("cannot record seen ids: {e}")))?;
        }
        for (tag, r) in &rejects {
            self.refuse(r, None);
            client.reject(*tag, false).await.map_err(classify)?;
        }
        let tags: Vec<u64> = acks.iter().map(|(tag, ..)| *tag).collect();
        // The master's acks first: if the connection drops before the deliveries are acked,
        // they come back redelivered and are acked then, without a second run.
        self.publish_acks(client, acks, started, ended).await;
        for tag in tags {
            client.ack(tag).await.map_err(classify)?;
        }
        Ok(())
    }

    /// Signed acks for the master, published concurrently (each waits for its confirm).
    async fn publish_acks(
        &mut self,
        client: &Arc<Client>,
        acks: Vec<(u64, envelope::Trigger, AckResult, String)>,
        started: SystemTime,
        ended: SystemTime,
    ) {
        let (Some(ack_cfg), Some(key), Some(mirror)) =
            (&self.cfg.ack, &self.ack_key, &self.cfg.mirror)
        else {
            return;
        };
        let mut set = tokio::task::JoinSet::new();
        for (_, trigger, result, detail) in acks {
            let ack = envelope::Ack::new(&trigger, mirror.clone(), result, &detail, started, ended);
            let env = match Envelope::sign(ack.render(), envelope::ACK_NAMESPACE, key) {
                Ok(e) => e,
                Err(e) => {
                    log(&format!("warning: cannot sign ack for {}: {e}", trigger.id));
                    self.delta.acks_failed += 1;
                    continue;
                }
            };
            let msg = Outgoing {
                body: env.to_json().into_bytes(),
                message_id: trigger.id.to_string(),
                sent_at: SystemTime::now(),
            };
            let (c, exchange, topic) = (
                client.clone(),
                self.broker.exchange.clone(),
                ack_cfg.topic.clone(),
            );
            set.spawn(async move {
                let r = c.publish(&exchange, &topic, &msg).await;
                (trigger.id, r)
            });
        }
        while let Some(res) = set.join_next().await {
            match res {
                Ok((_, Ok(()))) => self.delta.acks_published += 1,
                Ok((id, Err(e))) => {
                    self.delta.acks_failed += 1;
                    log(&format!("warning: ack for {id} not published: {e}"));
                }
                Err(_) => self.delta.acks_failed += 1,
            }
        }
    }

    fn record_hint(&mut self, i: usize, routing_key: &str, now: SystemTime) {
        let t = self.gate.trigger(i);
        let TriggerKind::Hint {
            module,
            dir,
            settle,
            ..
        } = &t.kind
        else {
            return;
        };
        let request = match dir {
            Some(d) => format!("sync {module} {d}"),
            None => format!("sync {module}"),
        };
        let now_s = state::epoch(now);
        let next_try = now_s + settle.as_secs() + u64::from(settle.subsec_nanos() > 0);
        let line = t.line;
        match self.hints.iter_mut().find(|h| h.trigger_line == line) {
            // Another message while settling or retrying: start settling again.
            Some(h) => {
                h.last_message = now_s;
                h.next_try = next_try;
                h.first_handoff = None;
                h.attempts = 0;
            }
            None => self.hints.push(PendingHint {
                trigger_line: line,
                request: request.clone(),
                last_message: now_s,
                first_handoff: None,
                attempts: 0,
                next_try,
            }),
        }
        self.delta.hints += 1;
        log(&format!(
            "hint request={} routing_key={} settle={}",
            quoted(&request),
            quoted(routing_key),
            humantime::format_duration(*settle)
        ));
    }

    fn next_hint_in(&self) -> Option<Duration> {
        let now = state::epoch(SystemTime::now());
        self.hints
            .iter()
            .map(|h| Duration::from_secs(h.next_try.saturating_sub(now)))
            .min()
    }

    /// Hands over every hint whose time has come; with `expect_change`, a run that found the
    /// file list unchanged is retried with backoff until it changes or the time is up.
    async fn run_due_hints(&mut self) {
        let now = state::epoch(SystemTime::now());
        let due: Vec<usize> = (0..self.hints.len())
            .filter(|&i| self.hints[i].next_try <= now)
            .collect();
        let mut done = Vec::new();
        for i in due {
            let h = self.hints[i].clone();
            let trigger = self
                .cfg
                .triggers
                .iter()
                .find(|t| t.line == h.trigger_line)
                .cloned();
            let (Some(t), Ok(request)) = (trigger, Request::parse(h.request.as_bytes())) else {
                // The config changed under a recorded hint: it no longer applies.
                done.push(i);
                continue;
            };
            let TriggerKind::Hint {
                settle,
                expect_change,
                ..
            } = t.kind
            else {
                done.push(i);
                continue;
            };
            let handler = self.handler.clone();
            let req = request.clone();
            let Ok((answer, kinds)) = tokio::task::spawn_blocking(move || {
                // Waiting, whatever the mode: the run's kinds below must be this run's.
                let a = handler.sync(&req, false);
                let kinds = match a {
                    HandoffAnswer::Synced(_) | HandoffAnswer::Accepted(_) => {
                        handler.last_run_kinds(&req)
                    }
                    _ => Ok(Vec::new()),
                };
                (a, kinds)
            })
            .await
            else {
                continue;
            };
            self.delta.handoffs += 1;
            let now = state::epoch(SystemTime::now());
            let first = h.first_handoff.unwrap_or(now);
            let kinds = kinds.unwrap_or_else(|e| {
                log(&format!("warning: {e}"));
                Vec::new()
            });
            let null_run = !kinds.is_empty() && kinds.iter().all(|k| k == "null");
            let unchanged = null_run || matches!(answer, HandoffAnswer::Failed(_));
            log(&format!(
                "hint handoff request={} answer={} kinds={} detail={}",
                quoted(&h.request),
                answer.word(),
                if kinds.is_empty() {
                    "-".to_owned()
                } else {
                    kinds.join(",")
                },
                quoted(answer.detail())
            ));
            let slot = &mut self.hints[i];
            match (&answer, expect_change) {
                (HandoffAnswer::Retry(_), _) => {
                    slot.next_try = now + retry_delay(settle, slot.attempts).as_secs();
                    slot.attempts += 1;
                }
                (HandoffAnswer::Refused(..), _) => done.push(i),
                (_, Some(window)) if unchanged => {
                    if now < first + window.as_secs() {
                        let wait = retry_delay(settle, slot.attempts);
                        slot.first_handoff = Some(first);
                        slot.attempts += 1;
                        slot.next_try = now + wait.as_secs().max(1);
                        log(&format!(
                            "hint request={} found nothing new (file list unchanged): again in {}",
                            quoted(&h.request),
                            humantime::format_duration(wait)
                        ));
                    } else {
                        log(&format!(
                            "hint request={} still unchanged after expect_change {}: given up",
                            quoted(&h.request),
                            humantime::format_duration(window)
                        ));
                        done.push(i);
                    }
                }
                _ => done.push(i),
            }
        }
        done.sort_unstable();
        for i in done.into_iter().rev() {
            self.hints.remove(i);
        }
        if let Err(e) = state::write_hints(&self.cfg.state_dir, &self.hints) {
            log(&format!("warning: cannot record hints: {e}"));
        }
        self.flush(None);
    }
}

/// settle × 2^attempts, at least one second and at most five minutes.
fn retry_delay(settle: Duration, attempts: u32) -> Duration {
    let base = settle.max(Duration::from_secs(1));
    base.saturating_mul(1 << attempts.min(16))
        .min(MAX_HINT_RETRY)
}

/// Whether running `r` covers `t`: the same module, and the whole module or a dir at or above
/// `t`'s.
fn covers(r: &Request, t: &Request) -> bool {
    r.module == t.module
        && match (&r.dir, &t.dir) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(rd), Some(td)) => td.is_within(rd),
        }
}

/// The fewest requests that cover `requests`: a whole-module request swallows its dirs, a dir
/// its subdirs, and a module with more than [`MAX_HANDOFFS`] distinct dirs is synced whole.
fn coalesce<'a>(requests: impl Iterator<Item = &'a Request>) -> Vec<Request> {
    let mut by_module: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for r in requests {
        let list = by_module.entry(r.module.to_string()).or_default();
        if list.iter().any(|have| covers(have, r)) {
            continue;
        }
        list.retain(|have| !covers(r, have));
        list.push(r.clone());
    }
    let mut out = Vec::new();
    for (module, list) in by_module {
        if list.len() > MAX_HANDOFFS {
            if let Ok(whole) = Request::new(&module, None) {
                out.push(whole);
                continue;
            }
        }
        out.extend(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Request {
        Request::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn coalescing_keeps_the_fewest_covering_requests() {
        let reqs = [
            r("sync fedora updates/41"),
            r("sync fedora updates"),
            r("sync epel 9"),
            r("sync fedora updates/41/x86_64"),
            r("sync epel 9"),
        ];
        let got: Vec<String> = coalesce(reqs.iter())
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got, vec!["sync epel 9", "sync fedora updates"]);
        let with_full = [r("sync fedora a"), r("sync fedora"), r("sync fedora b")];
        let got: Vec<String> = coalesce(with_full.iter())
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got, vec!["sync fedora"]);
        let many: Vec<Request> = (0..20).map(|i| r(&format!("sync fedora d{i}"))).collect();
        assert_eq!(coalesce(many.iter()), vec![r("sync fedora")]);
    }

    #[test]
    fn hint_retries_back_off_within_bounds() {
        assert_eq!(retry_delay(Duration::ZERO, 0), Duration::from_secs(1));
        assert_eq!(
            retry_delay(Duration::from_secs(2), 3),
            Duration::from_secs(16)
        );
        assert_eq!(retry_delay(Duration::from_secs(120), 9), MAX_HINT_RETRY);
    }
}
