//! Bus mirrors of one push: one signed trigger, published once with publisher confirms, however
//! many bus mirrors the push selects; then each mirror's ack, verified against its `ack_key`.
//!
//! The order is the contract's: connect, bind a private queue to `ack_topic`, consume it, and
//! only then publish, so no ack can come before the master listens for it. All of that happens
//! once, when the first bus mirror's turn comes (the first stage holding bus mirrors), so the
//! trigger is signed (`issued`) when it goes out, not when the push started: stages before may
//! take hours, and listeners refuse triggers older than their `max_age`.
//!
//! Acks arrive on the one connection and are sorted into one slot per mirror; each bus target
//! only waits on its slot, up to its deadline counted from the publish. An ack is believed only
//! when it names this trigger's id and request and verifies against that mirror's `ack_key`:
//! anything else is counted as unverified and never makes a mirror synced (or failed).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ssh_key::{PrivateKey, PublicKey};
use tokio::sync::{watch, Mutex, OnceCell};
use tracing::{debug, warn};

use super::protocol::{Answer, Exec};
use super::registry::{Bus, Mirror, Transport};
use super::session::Done;
use super::session::Outcome;
use crate::bus::amqp::{AmqpError, BrokerConfig, Client, Consumer, Outgoing};
use crate::bus::envelope::{
    Ack, AckResult, Envelope, MessageId, Name, Trigger, ACK_NAMESPACE, TRIGGER_NAMESPACE,
};
use crate::request::Request;

/// The master's private ack queues are `mirrorpush.master.<trigger id>`.
const ACK_QUEUE_PREFIX: &str = "mirrorpush.master.";

/// One bus mirror of a push.
#[derive(Clone)]
pub struct BusTarget {
    pub mirror: Mirror,
    /// The request itself: a listener hands exactly this to its handler.
    pub command: Exec,
    /// How long after the publish this mirror's ack is waited for.
    pub wait: Duration,
    push: Arc<BusPush>,
}

/// What every bus mirror of one push shares: the trigger, the connection, the ack slots.
pub struct BusPush {
    bus: Bus,
    request: Request,
    origin: Name,
    signing_key: PrivateKey,
    routing_key: String,
    slots: Arc<Slots>,
    published: OnceCell<Published>,
}

/// By mirror name: only mirrors with an `ack_key` have one.
type Slots = HashMap<String, Slot>;

/// One mirror with an `ack_key`: where its verified ack lands.
struct Slot {
    key: PublicKey,
    heard: watch::Sender<Option<Heard>>,
    unverified: AtomicU32,
}

#[derive(Clone)]
struct Heard {
    ack: Ack,
    at: Instant,
}

/// How the one publish went.
struct Published {
    begun: Instant,
    confirmed: Instant,
    /// `Err` says why no bus mirror can be reached.
    result: Result<(), String>,
    /// The connection acks arrive on, closed by [`BusPush::finish`].
    client: Mutex<Option<Client>>,
}

/// Loads the `[bus]` signing key; an unreadable, encrypted or unusable key is a config error.
pub fn load_signing_key(path: &Path) -> Result<PrivateKey, String> {
    let what = || format!("[bus] signing_key {}", path.display());
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", what()))?;
    let key = PrivateKey::from_openssh(&text)
        .map_err(|e| format!("{}: not an OpenSSH private key ({e})", what()))?;
    if key.is_encrypted() {
        return Err(format!(
            "{}: encrypted; the master signs unattended, so the key must be unencrypted \
             (readable only by the account mirrorpush runs as)",
            what()
        ));
    }
    Ok(key)
}

/// The broker connection settings of a `[bus]` table.
pub fn broker_config(bus: &Bus) -> BrokerConfig {
    BrokerConfig {
        url: bus.url.clone(),
        ca: bus.ca.clone(),
        cert: bus.cert.clone(),
        key: bus.key.clone(),
    }
}

/// Connects to the broker and closes again: for `check`.
pub async fn check_broker(bus: &Bus) -> Result<(), String> {
    let client = Client::connect(&broker_config(bus), "mirrorpush check")
        .await
        .map_err(|e| e.to_string())?;
    client.close().await;
    Ok(())
}

/// The trigger payload a push of `request` would publish now (for `--dry-run` and `list`:
/// a real push makes its own id and time when it publishes).
pub fn sample_payload(bus: &Bus, request: &Request) -> Result<String, String> {
    let origin = Name::parse(&bus.origin).map_err(|e| format!("[bus] origin: {e}"))?;
    let trigger =
        Trigger::new(request.clone(), origin, None).map_err(|e| format!("no random id: {e}"))?;
    Ok(trigger.render())
}

/// Builds the targets for `mirrors` (all bus mirrors of one push). `needs_ack` says, per
/// mirror, whether its completion matters (a later stage follows it, or `wait = true`): then
/// its ack is waited for up to its `timeout`; otherwise up to its `connect_timeout`, long
/// enough for a listener to say `accepted`.
pub fn targets(
    bus: &Bus,
    signing_key: PrivateKey,
    request: &Request,
    mirrors: &[(&Mirror, bool)],
) -> Result<(Vec<BusTarget>, Arc<BusPush>), String> {
    let origin = Name::parse(&bus.origin).map_err(|e| format!("[bus] origin: {e}"))?;
    let mut slots = HashMap::new();
    for (m, _) in mirrors {
        if let Transport::Bus {
            ack_key: Some(key), ..
        } = &m.transport
        {
            let (heard, _) = watch::channel(None);
            slots.insert(
                m.name.clone(),
                Slot {
                    key: key.clone(),
                    heard,
                    unverified: AtomicU32::new(0),
                },
            );
        }
    }
    let push = Arc::new(BusPush {
        routing_key: bus.routing_key(&request.module),
        bus: bus.clone(),
        request: request.clone(),
        origin,
        signing_key,
        slots: Arc::new(slots),
        published: OnceCell::new(),
    });
    let targets = mirrors
        .iter()
        .map(|(m, needs_ack)| BusTarget {
            mirror: (*m).clone(),
            command: Exec {
                text: request.to_string(),
                note: None,
            },
            wait: if *needs_ack {
                m.timeout
            } else {
                m.connect_timeout
            },
            push: push.clone(),
        })
        .collect();
    Ok((targets, push))
}

impl BusTarget {
    /// Publishes the trigger if no bus mirror of this push has yet, then waits for this
    /// mirror's ack until `wait` after the publish.
    pub async fn push(&self) -> Done {
        let p = self.push.publish().await;
        if let Err(e) = &p.result {
            return done(p.begun, p.confirmed, failed(e.clone()));
        }
        let Some(slot) = self.push.slots.get(&self.mirror.name) else {
            let outcome = answered(
                Answer::Unreported,
                "published; no ack_key, so no ack is waited for".into(),
            );
            return done(p.begun, p.confirmed, outcome);
        };
        let mut heard = slot.heard.subscribe();
        let deadline = tokio::time::Instant::from_std(p.begun + self.wait);
        let got = tokio::time::timeout_at(deadline, heard.wait_for(Option::is_some)).await;
        let got = match got {
            Ok(Ok(h)) => h.clone(),
            // The sender lives in the push: it cannot go away while we wait.
            Ok(Err(_)) | Err(_) => None,
        };
        match got {
            Some(h) => done(p.begun, h.at, judge(&h.ack)),
            None => {
                let unverified = slot.unverified.load(Ordering::Relaxed);
                let mut message = format!(
                    "published; no verified ack within {}",
                    humantime::format_duration(self.wait)
                );
                if unverified > 0 {
                    message.push_str(&format!(
                        " ({unverified} ack(s) naming this mirror did not verify against its \
                         ack_key and were ignored)"
                    ));
                }
                done(
                    p.begun,
                    Instant::now(),
                    answered(Answer::Unreported, message),
                )
            }
        }
    }
}

fn done(begun: Instant, at: Instant, outcome: Outcome) -> Done {
    Done {
        outcome,
        begun,
        elapsed: at.saturating_duration_since(begun),
    }
}

fn failed(error: String) -> Outcome {
    Outcome {
        message: error.clone(),
        error: Some(error),
        attempts: 1,
        ..Outcome::default()
    }
}

fn answered(answer: Answer, message: String) -> Outcome {
    Outcome {
        answer: Some(answer),
        message,
        attempts: 1,
        ..Outcome::default()
    }
}

/// A verified ack's meaning for the report.
fn judge(ack: &Ack) -> Outcome {
    let with_detail = |word: &str| {
        if ack.detail.is_empty() {
            word.to_owned()
        } else {
            format!("{word} ({})", ack.detail)
        }
    };
    match ack.result {
        AckResult::Synced => answered(Answer::Synced, with_detail("synced")),
        AckResult::Accepted => answered(Answer::Accepted, with_detail("accepted")),
        AckResult::Failed => failed(format!(
            "the mirror's listener reports the sync failed: {}",
            if ack.detail.is_empty() {
                "no detail"
            } else {
                &ack.detail
            }
        )),
    }
}

impl BusPush {
    /// The one publish of this push, done by whichever bus target comes first.
    async fn publish(&self) -> &Published {
        self.published
            .get_or_init(|| async {
                let begun = Instant::now();
                let (result, client) = match self.connect_and_publish().await {
                    Ok(c) => (Ok(()), Some(c)),
                    Err(e) => {
                        warn!(error = %e, "bus publish failed");
                        (Err(e), None)
                    }
                };
                Published {
                    begun,
                    confirmed: Instant::now(),
                    result,
                    client: Mutex::new(client),
                }
            })
            .await
    }

    async fn connect_and_publish(&self) -> Result<Client, String> {
        let b = &self.bus;
        let name = format!("mirrorpush master {}", b.origin);
        let client = Client::connect(&broker_config(b), &name)
            .await
            .map_err(|e| format!("bus: cannot reach the broker: {e}"))?;
        let trigger = Trigger::new(self.request.clone(), self.origin.clone(), None)
            .map_err(|e| format!("bus: no random id for the trigger: {e}"))?;
        // Listen before speaking: no ack can come before the master hears the topic. The
        // queue's name follows the broker permissions docs/bus.md gives the master.
        let queue = format!("{ACK_QUEUE_PREFIX}{}", trigger.id);
        let consumer = client
            .listen_private(&queue, &b.exchange, &b.ack_topic)
            .await
            .map_err(|e| format!("bus: cannot listen for acks on {:?}: {e}", b.ack_topic))?;
        let envelope = Envelope::sign(trigger.render(), TRIGGER_NAMESPACE, &self.signing_key)
            .map_err(|e| format!("bus: cannot sign the trigger: {e}"))?;
        let expected = Expected {
            id: trigger.id.clone(),
            request: self.request.clone(),
        };
        tokio::spawn(collect_acks(consumer, expected, self.slots.clone()));
        let msg = Outgoing {
            body: envelope.to_json().into_bytes(),
            message_id: trigger.id.to_string(),
            sent_at: SystemTime::now(),
        };
        // Mandatory: a trigger no listener's queue is bound for comes back instead of being
        // confirmed into nowhere.
        client
            .publish_mandatory(&b.exchange, &self.routing_key, &msg)
            .await
            .map_err(|e| match e {
                AmqpError::Unroutable(_) => format!(
                    "bus: no queue is bound to routing key {:?} on exchange {:?}, so no \
                     listener got the trigger: set up these mirrors' mirrorpush-listen (its \
                     [broker] queue bound by a [[trigger]] topic matching that key) and push again",
                    self.routing_key, b.exchange
                ),
                e => format!(
                    "bus: the broker did not confirm the trigger (exchange {:?}, routing key \
                     {:?}): {e}",
                    b.exchange, self.routing_key
                ),
            })?;
        debug!(id = %trigger.id, routing_key = %self.routing_key, "trigger published and confirmed");
        Ok(client)
    }

    /// Closes the broker connection (the private ack queue goes with it). Call once every bus
    /// target has ended.
    pub async fn finish(&self) {
        if let Some(p) = self.published.get() {
            if let Some(client) = p.client.lock().await.take() {
                client.close().await;
            }
        }
    }
}

/// What an ack must name to be about this push.
struct Expected {
    id: MessageId,
    request: Request,
}

/// Sorts acks into slots until the connection closes. Acks of other pushes (every master's
/// acks share the topic) are skipped quietly; one that names this push but does not verify is
/// counted against the mirror it names, and logged.
async fn collect_acks(mut consumer: Consumer, expected: Expected, slots: Arc<Slots>) {
    while let Some(delivery) = consumer.recv().await {
        let at = Instant::now();
        match sort_ack(&delivery.body, &expected, &slots) {
            Sorted::Heard(mirror, ack) => {
                if let Some(slot) = slots.get(&mirror) {
                    // The first verified ack stands; a listener sends one per trigger.
                    slot.heard.send_if_modified(|h| {
                        h.is_none().then(|| *h = Some(Heard { ack, at })).is_some()
                    });
                }
            }
            Sorted::Unverified(mirror, why) => {
                warn!(mirror = %mirror, reason = %why, "ignored an ack that does not verify");
                if let Some(slot) = slots.get(&mirror) {
                    slot.unverified.fetch_add(1, Ordering::Relaxed);
                }
            }
            Sorted::NotOurs(why) => debug!(reason = %why, "skipped a message on the ack topic"),
        }
    }
    debug!("ack listener ended");
}

enum Sorted {
    Heard(String, Ack),
    Unverified(String, String),
    NotOurs(String),
}

/// Decides what one message on the ack topic is. Cheap checks first: with many pushes and
/// mirrors on one topic, most messages are someone else's and need no signature check.
fn sort_ack(body: &[u8], expected: &Expected, slots: &Slots) -> Sorted {
    let envelope = match Envelope::from_json(body) {
        Ok(e) => e,
        Err(e) => return Sorted::NotOurs(format!("not an envelope: {e}")),
    };
    let ack = match Ack::parse(&envelope.payload) {
        Ok(a) => a,
        Err(e) => return Sorted::NotOurs(format!("not an ack: {e}")),
    };
    if ack.id != expected.id {
        return Sorted::NotOurs(format!("ack of another trigger ({})", ack.id));
    }
    let mirror = ack.mirror.as_str().to_owned();
    let Some(slot) = slots.get(&mirror) else {
        return Sorted::NotOurs(format!(
            "ack from {mirror:?}, not a bus mirror of this push with an ack_key"
        ));
    };
    if let Err(e) = envelope.verify_key(ACK_NAMESPACE, &slot.key) {
        return Sorted::Unverified(mirror, e.to_string());
    }
    if ack.request != expected.request {
        return Sorted::Unverified(
            mirror,
            format!(
                "signed, but for request {:?}, not {:?}",
                ack.request.to_string(),
                expected.request.to_string()
            ),
        );
    }
    Sorted::Heard(mirror, ack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::envelope::tests::test_key;

    fn slot(key: &PrivateKey) -> Slot {
        Slot {
            key: key.public_key().clone(),
            heard: watch::channel(None).0,
            unverified: AtomicU32::new(0),
        }
    }

    /// An ack as `mirror` would send it, signed with `key`.
    fn ack(trigger: &Trigger, mirror: &str, result: AckResult, key: &PrivateKey) -> Vec<u8> {
        let now = SystemTime::now();
        let ack = Ack::new(trigger, Name::parse(mirror).unwrap(), result, "", now, now);
        Envelope::sign(ack.render(), ACK_NAMESPACE, key)
            .unwrap()
            .to_json()
            .into_bytes()
    }

    #[test]
    fn a_mirror_cannot_ack_for_another_and_junk_is_skipped() {
        let (a_key, b_key) = (test_key(), test_key());
        let slots: Slots = [
            ("a.lab".to_owned(), slot(&a_key)),
            ("b.lab".to_owned(), slot(&b_key)),
        ]
        .into_iter()
        .collect();
        let request = Request::parse(b"sync fedora").unwrap();
        let trigger = Trigger::new(request.clone(), Name::parse("master").unwrap(), None).unwrap();
        let expected = Expected {
            id: trigger.id.clone(),
            request,
        };
        let sorted = |body: &[u8]| sort_ack(body, &expected, &slots);
        // Mirror a, with its own valid key, says b failed (or synced): b's key does not sign it.
        for result in [AckResult::Failed, AckResult::Synced] {
            match sorted(&ack(&trigger, "b.lab", result, &a_key)) {
                Sorted::Unverified(m, why) => assert_eq!(m, "b.lab", "{why}"),
                _ => panic!("a forged ack for b was believed"),
            }
        }
        assert!(matches!(
            sorted(&ack(&trigger, "b.lab", AckResult::Synced, &b_key)),
            Sorted::Heard(m, _) if m == "b.lab"
        ));
        // Another push's ack, a mirror not in this push, junk of every shape: not ours, and
        // no signature is checked for them.
        let other = Trigger::new(
            Request::parse(b"sync fedora").unwrap(),
            Name::parse("master").unwrap(),
            None,
        )
        .unwrap();
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for body in [
            ack(&other, "b.lab", AckResult::Synced, &b_key),
            ack(&trigger, "c.lab", AckResult::Synced, &b_key),
            b"\xff\xfe not UTF-8".to_vec(),
            deep.into_bytes(),
            vec![b'{'; 2 * 1024 * 1024],
            br#"{"payload": "mirrorpush-ack 1\n", "signature": "x"}"#.to_vec(),
        ] {
            assert!(matches!(sorted(&body), Sorted::NotOurs(_)));
        }
    }
}
