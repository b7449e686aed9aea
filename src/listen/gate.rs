//! What may pass: the checks a signed trigger goes through before anything runs, in order
//! (size, envelope, payload and grammar, signature and signer, module, age). Pure: the replay
//! check needs the state dir and is the caller's, as is what to do with the verdict.

use std::time::{Duration, SystemTime};

use super::config::{ListenConfig, TriggerKind, TriggerRule};
use crate::bus::envelope::{self, Envelope, EnvelopeError, VerifiedTrigger};
use crate::bus::signers::AllowedSigners;
use crate::bus::topic;

/// Allowed clock skew: a trigger issued more than this in the future is refused.
pub const FUTURE_SKEW: Duration = Duration::from_secs(60);

/// Why a delivery or an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The short word logs and counters use.
    pub reason: &'static str,
    pub detail: String,
    /// The trigger's id when the payload could be read.
    pub id: Option<String>,
}

impl Refusal {
    pub fn new(reason: &'static str, detail: impl Into<String>, id: Option<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
            id,
        }
    }

    /// `--stdin`'s exit code: 64 not an envelope or not the grammar, 77 not trusted or not
    /// permitted.
    pub fn exit_code(&self) -> i32 {
        match self.reason {
            "not-json" | "malformed" | "grammar" | "too-large" => 64,
            _ => 77,
        }
    }
}

fn from_envelope(e: EnvelopeError, id: Option<String>) -> Refusal {
    Refusal::new(e.reason(), e.to_string(), id)
}

/// A trigger that passed every check but the replay check.
#[derive(Debug, Clone)]
pub struct AdmittedTrigger {
    pub verified: VerifiedTrigger,
    /// Until when (epoch seconds) its id must be remembered.
    pub remember_until: u64,
}

/// The triggers of listen.toml with their allowed_signers loaded.
pub struct Gate {
    triggers: Vec<(TriggerRule, Option<AllowedSigners>)>,
    max_age: Duration,
}

/// Where a delivery goes, by its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Signed,
    /// The index of the hint trigger.
    Hint(usize),
    None,
}

impl Gate {
    /// Loads every allowed_signers file; returns the gate and the files' warnings.
    pub fn new(cfg: &ListenConfig) -> Result<(Gate, Vec<String>), String> {
        let mut triggers = Vec::new();
        let mut warnings = Vec::new();
        for t in &cfg.triggers {
            let signers = match &t.kind {
                TriggerKind::Signed {
                    allowed_signers, ..
                } => {
                    let s = AllowedSigners::load(allowed_signers).map_err(|e| e.0)?;
                    warnings.extend(s.warnings.iter().cloned());
                    if s.is_empty() {
                        warnings.push(format!(
                            "{}: no usable key: every signed trigger will be refused",
                            allowed_signers.display()
                        ));
                    }
                    Some(s)
                }
                TriggerKind::Hint { .. } => None,
            };
            triggers.push((t.clone(), signers));
        }
        Ok((
            Gate {
                triggers,
                max_age: cfg.max_age,
            },
            warnings,
        ))
    }

    pub fn trigger(&self, i: usize) -> &TriggerRule {
        &self.triggers[i].0
    }

    /// The first `[[trigger]]` whose topic matches decides: signed or which hint.
    pub fn route(&self, routing_key: &str) -> Route {
        for (i, (t, signers)) in self.triggers.iter().enumerate() {
            if topic::matches(&t.topic, routing_key) {
                return match signers {
                    Some(_) => Route::Signed,
                    None => Route::Hint(i),
                };
            }
        }
        Route::None
    }

    /// Checks a signed envelope against the signed triggers (those whose topic matches
    /// `routing_key`, or all of them for `None`, as `--stdin` has no routing key).
    pub fn check(
        &self,
        body: &[u8],
        routing_key: Option<&str>,
        now: SystemTime,
    ) -> Result<AdmittedTrigger, Refusal> {
        let env = Envelope::from_json(body).map_err(|e| from_envelope(e, None))?;
        self.check_envelope(&env, routing_key, now)
    }

    pub fn check_envelope(
        &self,
        env: &Envelope,
        routing_key: Option<&str>,
        now: SystemTime,
    ) -> Result<AdmittedTrigger, Refusal> {
        let trigger = envelope::Trigger::parse(&env.payload).map_err(|e| from_envelope(e, None))?;
        let id = Some(trigger.id.to_string());
        let mut refusal = Refusal::new(
            "unrouted",
            "no signed [[trigger]] in the config",
            id.clone(),
        );
        let mut verified = None;
        for (t, signers) in &self.triggers {
            let (
                Some(signers),
                TriggerKind::Signed {
                    modules,
                    allowed_signers,
                },
            ) = (signers, &t.kind)
            else {
                continue;
            };
            if routing_key.is_some_and(|k| !topic::matches(&t.topic, k)) {
                continue;
            }
            match env.verify_signers(
                envelope::TRIGGER_NAMESPACE,
                signers,
                trigger.origin.as_str(),
                now,
            ) {
                Err(e) => {
                    // A bad signature says more than "unknown signer" from another file.
                    if refusal.reason != "signature" && refusal.reason != "not-allowed" {
                        refusal = from_envelope(e, id.clone());
                    }
                }
                Ok(key) => {
                    let allowed = modules
                        .as_ref()
                        .is_none_or(|m| m.contains(&trigger.request.module));
                    if allowed {
                        verified = Some(VerifiedTrigger {
                            trigger: trigger.clone(),
                            key,
                        });
                        break;
                    }
                    refusal = Refusal::new(
                        "not-allowed",
                        format!(
                            "signer {} may not push module {} ({}, [[trigger]] line {})",
                            trigger.origin,
                            trigger.request.module,
                            allowed_signers.display(),
                            t.line
                        ),
                        id.clone(),
                    );
                }
            }
        }
        let verified = verified.ok_or(refusal)?;
        let issued = verified.trigger.issued;
        if issued > now + FUTURE_SKEW {
            return Err(Refusal::new(
                "future",
                format!(
                    "issued {} is more than a minute ahead of this mirror's clock",
                    envelope::format_time(issued)
                ),
                id,
            ));
        }
        if issued + self.max_age < now {
            return Err(Refusal::new(
                "expired",
                format!(
                    "issued {}, older than max_age {}",
                    envelope::format_time(issued),
                    humantime::format_duration(self.max_age)
                ),
                id,
            ));
        }
        // Remembered max_age plus the minute of skew from now: longer than the trigger (or
        // a copy of it) could pass the age check.
        let remember_until = super::state::epoch(now + self.max_age + FUTURE_SKEW) + 1;
        Ok(AdmittedTrigger {
            verified,
            remember_until,
        })
    }
}
