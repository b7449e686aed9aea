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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
