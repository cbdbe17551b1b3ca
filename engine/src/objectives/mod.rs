//! Inference-time objective knobs.
//!
//! Multi-objective models (the SMORL heads, the Decision Transformers) let the caller trade
//! accuracy against diversity, novelty or unexpectedness when scoring, without reloading: an
//! architecture declares its knobs as [`ObjectiveSpec`]s (name, default, accepted range), and
//! a request or a session carries an [`Objectives`] set with their current values. Plain
//! backbones declare none.
//!
//! A knob whose default is NaN is *optional*: NaN means "let the model choose" (for example a
//! target return generated from the history), and any finite value in range overrides it.

pub mod returns;
pub mod similarity;

use crate::error::{Error, Result};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// One knob of an architecture.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ObjectiveSpec {
    /// Name used by every API (`alpha`, `lambda_div`, ...).
    pub name: &'static str,
    /// Value when the caller sets nothing (NaN: optional, the model chooses).
    pub default: f32,
    /// Smallest accepted value.
    pub min: f32,
    /// Largest accepted value.
    pub max: f32,
    /// One line on what it does.
    pub doc: &'static str,
}

impl ObjectiveSpec {
    /// Whether NaN ("the model chooses") is an accepted value.
    pub fn is_optional(&self) -> bool {
        self.default.is_nan()
    }
}

/// Current values of a model's knobs (see the module docs). Created from the model
/// ([`crate::Model::default_objectives`]) so that it always names the model's knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Objectives {
    specs: &'static [ObjectiveSpec],
    values: Vec<f32>,
}

impl Objectives {
    /// Every knob of `specs` at its default.
    pub fn new(specs: &'static [ObjectiveSpec]) -> Self {
        Objectives {
            specs,
            values: specs.iter().map(|s| s.default).collect(),
        }
    }

    /// The knobs this set holds.
    pub fn specs(&self) -> &'static [ObjectiveSpec] {
        self.specs
    }

    /// Sets knob `name`.
    ///
    /// # Errors
    /// When the model has no knob of that name (the message lists the known ones), or the
    /// value is outside the knob's range or not finite (NaN is accepted by optional knobs).
    pub fn set(&mut self, name: &str, value: f32) -> Result<()> {
        let Some(i) = self.specs.iter().position(|s| s.name == name) else {
            return Err(Error::InvalidArgument(format!(
                "unknown objective `{name}`: {}",
                self.known()
            )));
        };
        let spec = &self.specs[i];
        let ok = if value.is_nan() {
            spec.is_optional()
        } else {
            value.is_finite() && value >= spec.min && value <= spec.max
        };
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "objective `{name}` = {value} is out of range: expected {}..={}{}",
                spec.min,
                spec.max,
                if spec.is_optional() {
                    " or NaN (the model chooses)"
                } else {
                    ""
                }
            )));
        }
        self.values[i] = value;
        Ok(())
    }

    /// The value of knob `name`, if the set has it.
    pub fn get(&self, name: &str) -> Option<f32> {
        self.specs
            .iter()
            .position(|s| s.name == name)
            .map(|i| self.values[i])
    }

    /// The value of knob `name`.
    ///
    /// # Panics
    /// When the set has no such knob: architectures read only the knobs they declare.
    pub fn value(&self, name: &str) -> f32 {
        match self.get(name) {
            Some(v) => v,
            None => panic!("objective `{name}` is not declared by this model"),
        }
    }

    /// `(name, value)` pairs in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f32)> + '_ {
        self.specs
            .iter()
            .map(|s| s.name)
            .zip(self.values.iter().copied())
    }

    /// Resets every knob to its default.
    pub fn reset(&mut self) {
        for (v, s) in self.values.iter_mut().zip(self.specs) {
            *v = s.default;
        }
    }

    /// Whether `other` was made for the same knobs (same names in the same order).
    pub fn same_knobs(&self, other: &Objectives) -> bool {
        self.specs.len() == other.specs.len()
            && self
                .specs
                .iter()
                .zip(other.specs)
                .all(|(a, b)| a.name == b.name)
    }

    fn known(&self) -> String {
        if self.specs.is_empty() {
            return String::from("this model has no objective knobs");
        }
        let names: Vec<&str> = self.specs.iter().map(|s| s.name).collect();
        format!("this model's objectives are {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const SPECS: &[ObjectiveSpec] = &[
        ObjectiveSpec {
            name: "alpha",
            default: 1.0,
            min: 0.0,
            max: 100.0,
            doc: "weight of the supervised logits",
        },
        ObjectiveSpec {
            name: "target_div",
            default: f32::NAN,
            min: 0.0,
            max: 2.0,
            doc: "explicit diversity return",
        },
    ];

    #[test]
    fn set_checks_names_and_ranges() {
        let mut o = Objectives::new(SPECS);
        assert_eq!(o.get("alpha"), Some(1.0));
        o.set("alpha", 2.5).unwrap();
        assert_eq!(o.value("alpha"), 2.5);
        let e = o.set("beta", 1.0).unwrap_err().to_string();
        assert!(
            e.contains("`beta`") && e.contains("alpha, target_div"),
            "{e}"
        );
        let e = o.set("alpha", -1.0).unwrap_err().to_string();
        assert!(e.contains("0..=100"), "{e}");
        assert!(o.set("alpha", f32::NAN).is_err());
        assert!(o.set("alpha", f32::INFINITY).is_err());
        // The failed calls changed nothing.
        assert_eq!(o.value("alpha"), 2.5);
        // Optional knobs accept NaN back.
        o.set("target_div", 1.5).unwrap();
        o.set("target_div", f32::NAN).unwrap();
        assert!(o.value("target_div").is_nan());
        o.reset();
        assert_eq!(o.value("alpha"), 1.0);
    }

    #[test]
    fn a_model_without_knobs_says_so() {
        let mut o = Objectives::new(&[]);
        let e = o.set("alpha", 1.0).unwrap_err().to_string();
        assert!(e.contains("no objective knobs"), "{e}");
        assert!(o.same_knobs(&Objectives::new(&[])));
        assert!(!o.same_knobs(&Objectives::new(SPECS)));
    }
}
