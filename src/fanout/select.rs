//! Which mirrors a command applies to, and for those left out, why.

use super::registry::{Mirror, Registry};
use crate::request::ModuleName;

/// What the user asked for. Empty `mirrors` and `tags` mean "every mirror"; otherwise a mirror
/// is picked when its name is among `mirrors` or it carries any of `tags`.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub module: Option<ModuleName>,
    pub mirrors: Vec<String>,
    pub tags: Vec<String>,
}

/// One registry entry with the selection decision.
#[derive(Debug, Clone)]
pub struct Choice<'a> {
    pub mirror: &'a Mirror,
    /// `None`: selected. `Some(reason)`: left out, and why.
    pub skipped: Option<String>,
}

impl Selector {
    /// Decides for every mirror, in registry order. A `--mirror` name that is not in the
    /// registry is an error (a typo must not silently push to nobody).
    pub fn apply<'a>(&self, registry: &'a Registry) -> Result<Vec<Choice<'a>>, String> {
        for name in &self.mirrors {
            if registry.get(name).is_none() {
                return Err(format!(
                    "no mirror named {name:?} in {}",
                    registry.path.display()
                ));
            }
        }
        let filtered = !self.mirrors.is_empty() || !self.tags.is_empty();
        Ok(registry
            .mirrors
            .iter()
            .map(|m| {
                let picked = !filtered
                    || self.mirrors.contains(&m.name)
                    || m.tags.iter().any(|t| self.tags.contains(t));
                let skipped = if !picked {
                    Some("not named by --mirror/--tag".to_owned())
                } else if !m.enabled {
                    Some("disabled (enabled = false)".to_owned())
                } else {
                    match &self.module {
                        Some(module) if !m.carries(module) => {
                            Some(format!("does not carry module {module}"))
                        }
                        _ => None,
                    }
                };
                Choice { mirror: m, skipped }
            })
            .collect())
    }
}

/// Why a push selected nobody, in words that lead somewhere: a module no mirror carries names
/// the registry and the modules it knows (and the closest one, for a typo); a module that is
/// carried but filtered out or disabled points at `list`, which shows each mirror's reason.
pub fn why_none(registry: &Registry, module: &ModuleName, request: &str) -> String {
    let mut known: Vec<&str> = registry
        .mirrors
        .iter()
        .flat_map(|m| m.modules.iter().map(|x| x.as_str()))
        .collect();
    known.sort_unstable();
    known.dedup();
    let file = registry.path.display();
    if known.contains(&module.as_str()) {
        return format!(
            "no mirror selected for \"{request}\": the mirrors in {file} that carry {module} are \
             disabled or not named by --mirror/--tag; see `mirrorpush list --module {module}`"
        );
    }
    if known.is_empty() {
        return format!("no mirror in {file} carries any module: add [[mirror]] tables");
    }
    let mut text = format!(
        "no mirror in {file} carries module \"{module}\"; the modules it knows: {}",
        known.join(", ")
    );
    if let Some(close) = closest(module.as_str(), &known) {
        text.push_str(&format!(" (did you mean {close:?}?)"));
    }
    text
}

/// The known name nearest to `typed` (optimal string alignment distance, so a swap of two
/// letters counts one), when it is near enough to be a typo.
fn closest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (typed.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_module_nobody_carries_names_the_registry_and_the_closest_module() {
        let r = Registry::parse(
            Path::new("/etc/m.toml"),
            "[[mirror]]\nname = \"a\"\nmodules = [\"fedora\", \"debian\"]\n\
             [[mirror]]\nname = \"b\"\nmodules = [\"fedora-epel\"]\nenabled = false\n",
        )
        .unwrap();
        let m = |s: &str| ModuleName::parse(s).unwrap();
        assert_eq!(
            why_none(&r, &m("fedroa"), "sync fedroa"),
            "no mirror in /etc/m.toml carries module \"fedroa\"; the modules it knows: debian, \
             fedora, fedora-epel (did you mean \"fedora\"?)"
        );
        assert!(!why_none(&r, &m("ubuntu"), "sync ubuntu").contains("did you mean"));
        let carried = why_none(&r, &m("fedora-epel"), "sync fedora-epel");
        assert!(
            carried.contains("disabled") && carried.contains("list --module fedora-epel"),
            "{carried}"
        );
        assert_eq!(edit_distance("fedroa", "fedora"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn selects_by_module_tag_name_and_enabled() {
        let r = Registry::parse(
            Path::new("m.toml"),
            r#"
[[mirror]]
name = "a"
modules = ["fedora"]
tags = ["eu"]
[[mirror]]
name = "b"
modules = ["debian"]
tags = ["eu"]
[[mirror]]
name = "c"
modules = ["fedora"]
enabled = false
[[mirror]]
name = "d"
modules = ["fedora"]
tags = ["us"]
"#,
        )
        .unwrap();
        let picked = |s: Selector| -> Vec<String> {
            s.apply(&r)
                .unwrap()
                .into_iter()
                .filter(|c| c.skipped.is_none())
                .map(|c| c.mirror.name.clone())
                .collect()
        };
        let fedora = ModuleName::parse("fedora").ok();
        assert_eq!(
            picked(Selector {
                module: fedora.clone(),
                ..Default::default()
            }),
            ["a", "d"]
        );
        assert_eq!(picked(Selector::default()), ["a", "b", "d"]);
        let eu = Selector {
            module: fedora.clone(),
            tags: vec!["eu".into()],
            ..Default::default()
        };
        assert_eq!(picked(eu), ["a"]);
        let named = Selector {
            module: fedora.clone(),
            mirrors: vec!["d".into()],
            tags: vec!["eu".into()],
        };
        assert_eq!(picked(named), ["a", "d"]);
        let choices = Selector {
            module: fedora.clone(),
            ..Default::default()
        }
        .apply(&r)
        .unwrap();
        assert!(choices[1]
            .skipped
            .as_deref()
            .unwrap()
            .contains("does not carry module fedora"));
        assert!(choices[2].skipped.as_deref().unwrap().contains("disabled"));
        let typo = Selector {
            mirrors: vec!["zz".into()],
            ..Default::default()
        };
        assert!(typo
            .apply(&r)
            .unwrap_err()
            .contains("no mirror named \"zz\""));
    }
}
