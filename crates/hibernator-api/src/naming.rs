//! Names and labels shared by the controller (which creates the objects) and the CLI (which
//! finds them): runner Job names, label keys, restore ConfigMap names.

use crate::plan::Operation;

/// Label keys on runner Jobs and their pods.
pub mod labels {
    /// Plan name (hashed when longer than a label value may be).
    pub const PLAN: &str = "hibernator.ardikasaputro.io/plan";
    /// Target name.
    pub const TARGET: &str = "hibernator.ardikasaputro.io/target";
    /// `hibernate`, `wakeUp` or `enforce` (an in-sleep check).
    pub const OPERATION: &str = "hibernator.ardikasaputro.io/operation";
    /// Cycle identifier.
    pub const CYCLE: &str = "hibernator.ardikasaputro.io/cycle";
    /// Attempt number.
    pub const ATTEMPT: &str = "hibernator.ardikasaputro.io/attempt";
    /// Standard name label.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// Standard managed-by label.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Marks restore ConfigMaps.
    pub const RESTORE: &str = "hibernator.ardikasaputro.io/restore-data";
    /// The UID of the plan a restore ConfigMap belongs to (the ConfigMap has no owner
    /// reference, so that deleting a plan with `onDelete: Leave` keeps it).
    pub const PLAN_UID: &str = "hibernator.ardikasaputro.io/plan-uid";
}

/// The controller's name: `app.kubernetes.io/managed-by` value and field manager.
pub const MANAGER: &str = "hibernator-controller";

/// Eight hex digits of a stable hash (FNV-1a; stable across versions, unlike `DefaultHasher`).
pub fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", h as u32)
}

/// A value usable as a label value (at most 63 characters; hashed when longer).
pub fn label_value(s: &str) -> String {
    if s.len() <= 63 {
        s.to_string()
    } else {
        format!(
            "{}-{}",
            s[..54].trim_end_matches(['-', '.', '_']),
            short_hash(s)
        )
    }
}

/// The deterministic Job name of an execution: `<plan>-<target>-<h|w>-<cycle>-<attempt>`,
/// shortened with a hash when longer than 63 characters.
pub fn job_name(plan: &str, target: &str, op: Operation, cycle: &str, attempt: i32) -> String {
    let op = match op {
        Operation::Hibernate => "h",
        Operation::WakeUp => "w",
    };
    named_job(plan, target, op, cycle, attempt)
}

/// The value of the operation label and `HIBERNATOR_OPERATION` of an in-sleep enforcement
/// check (a hibernation's target checked while it sleeps; not an operation of the cycle).
pub const ENFORCE: &str = "enforce";

/// The deterministic Job name of in-sleep check `check` of a target:
/// `<plan>-<target>-e-<cycle>-<check>`, shortened like [`job_name`].
pub fn enforce_job_name(plan: &str, target: &str, cycle: &str, check: i32) -> String {
    named_job(plan, target, "e", cycle, check)
}

fn named_job(plan: &str, target: &str, op: &str, cycle: &str, attempt: i32) -> String {
    let full = format!("{plan}-{target}-{op}-{cycle}-{attempt}");
    if full.len() <= 63 {
        return full;
    }
    let tail = format!("-{op}-{cycle}-{attempt}-{}", short_hash(&full));
    let room = 63usize.saturating_sub(tail.len());
    let head: String = format!("{plan}-{target}").chars().take(room).collect();
    format!("{}{tail}", head.trim_end_matches(['-', '.']))
}

/// The restore ConfigMap's name for a plan.
pub fn restore_config_map(plan: &str) -> String {
    let name = format!("hibernator-restore-{plan}");
    if name.len() <= 253 {
        name
    } else {
        format!("{}-{}", &name[..243], short_hash(&name))
    }
}

/// The name of an Event about `object` at `nanos`: `<object>.<hex nanos>`, the object's name
/// shortened so that the whole is a valid object name (at most 253 characters); a longer name
/// would make the API server refuse the Event.
pub fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let room = 253usize.saturating_sub(suffix.len());
    let head: String = object.chars().take(room).collect();
    format!("{}{suffix}", head.trim_end_matches(['-', '.']))
}

/// `s` cut to at most `max` bytes on a character boundary (Event notes are limited in bytes).
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_stay_valid_for_the_longest_plan_names() {
        let long = "p".repeat(253);
        let n = event_name(&long, 1_796_000_000_000_000_000);
        assert_eq!(n.len(), 253, "{n}");
        assert!(n.ends_with(&format!(".{:x}", 1_796_000_000_000_000_000i128)));
        let dotted = format!("{}.-{}", "a".repeat(234), "b".repeat(10));
        let n = event_name(&dotted, 1_796_000_000_000_000_000);
        assert!(!n.contains(".-."), "{n}");
        assert!(n.len() <= 253);
        assert_eq!(event_name("p", 255), "p.ff");
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
    }

    #[test]
    fn job_names_are_deterministic_and_short() {
        let n = job_name(
            "prod-offhours",
            "prod-db",
            Operation::Hibernate,
            "20261127t0100",
            1,
        );
        assert_eq!(n, "prod-offhours-prod-db-h-20261127t0100-1");
        let long = job_name(
            &"p".repeat(60),
            &"t".repeat(60),
            Operation::WakeUp,
            "20261127t0100-2",
            3,
        );
        assert!(long.len() <= 63, "{long}");
        assert!(long.contains("-w-20261127t0100-2-3-"), "{long}");
        assert_eq!(
            long,
            job_name(
                &"p".repeat(60),
                &"t".repeat(60),
                Operation::WakeUp,
                "20261127t0100-2",
                3
            )
        );
        assert_ne!(
            long,
            job_name(
                &"p".repeat(61),
                &"t".repeat(59),
                Operation::WakeUp,
                "20261127t0100-2",
                3
            )
        );
    }

    #[test]
    fn long_names_fit() {
        assert_eq!(
            restore_config_map("prod-offhours"),
            "hibernator-restore-prod-offhours"
        );
        assert!(restore_config_map(&"x".repeat(253)).len() <= 253);
        assert!(label_value(&"x".repeat(100)).len() <= 63);
        assert_eq!(label_value("short"), "short");
    }
}
