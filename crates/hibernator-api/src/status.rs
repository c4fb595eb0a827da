//! Schema helpers for status fields.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Schema of a kstatus `conditions` list: a list-map keyed by `type`.
pub fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "kstatus conditions, one per type.",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "description": "Condition type."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown."},
                "reason": {"type": "string", "description": "CamelCase reason."},
                "message": {"type": "string", "description": "Human-readable detail."},
                "observedGeneration": {"type": "integer", "format": "int64", "description": "Generation the condition was set for."},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."}
            }
        }
    })
}
