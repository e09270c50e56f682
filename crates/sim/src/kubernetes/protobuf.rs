//! Kubernetes' protobuf wire form, decoded into the JSON the simulator
//! stores. kubectl's typed clients send built-in kinds as
//! `application/vnd.kubernetes.protobuf` (`kubectl create job` does), and a
//! real API server accepts it, so the simulator must too.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` (typeMeta = 1 with
//! apiVersion = 1 and kind = 2; raw = 2, the object's own message). The
//! object is decoded with a schema of field numbers and JSON names, written
//! from k8s.io/api's `generated.proto` for Job and the parts of a pod
//! template that Jobs commonly use. A field outside that schema is refused
//! with a 415 naming it rather than silently dropped, so a client's data
//! never vanishes unnoticed; zero values of unknown fields are skipped, as
//! JSON would have omitted them.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How a field's bytes become JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    /// A Go `metav1.Time`: `{seconds = 1, nanos = 2}` → RFC 3339.
    Time,
    /// A `resource.Quantity`: `{string = 1}` → its string.
    Quantity,
    Msg(&'static Schema),
    /// An embedded Go struct whose fields JSON inlines into the parent.
    Inline(&'static Schema),
    StrMap,
    QuantityMap,
}

struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

struct Schema {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn r(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

use Ty::*;

static OWNER_REFERENCE: Schema = Schema {
    name: "OwnerReference",
    fields: &[
        f(1, "kind", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
        f(5, "apiVersion", Str),
        f(6, "controller", Bool),
        f(7, "blockOwnerDeletion", Bool),
    ],
};

static OBJECT_META: Schema = Schema {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Str),
        f(2, "generateName", Str),
        f(3, "namespace", Str),
        f(4, "selfLink", Str),
        f(5, "uid", Str),
        f(6, "resourceVersion", Str),
        f(7, "generation", Int),
        f(8, "creationTimestamp", Time),
        f(9, "deletionTimestamp", Time),
        f(10, "deletionGracePeriodSeconds", Int),
        f(11, "labels", StrMap),
        f(12, "annotations", StrMap),
        r(13, "ownerReferences", Msg(&OWNER_REFERENCE)),
        r(14, "finalizers", Str),
    ],
};

static REQUIREMENT: Schema = Schema {
    name: "LabelSelectorRequirement",
    fields: &[f(1, "key", Str), f(2, "operator", Str), r(3, "values", Str)],
};

static LABEL_SELECTOR: Schema = Schema {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", StrMap),
        r(2, "matchExpressions", Msg(&REQUIREMENT)),
    ],
};

static LOCAL_REF: Schema = Schema {
    name: "LocalObjectReference",
    fields: &[f(1, "name", Str)],
};

static KEY_SELECTOR: Schema = Schema {
    name: "KeySelector",
    fields: &[
        f(1, "", Inline(&LOCAL_REF)),
        f(2, "key", Str),
        f(3, "optional", Bool),
    ],
};

static FIELD_SELECTOR: Schema = Schema {
    name: "ObjectFieldSelector",
    fields: &[f(1, "apiVersion", Str), f(2, "fieldPath", Str)],
};

static ENV_SOURCE: Schema = Schema {
    name: "EnvVarSource",
    fields: &[
        f(1, "fieldRef", Msg(&FIELD_SELECTOR)),
        f(3, "configMapKeyRef", Msg(&KEY_SELECTOR)),
        f(4, "secretKeyRef", Msg(&KEY_SELECTOR)),
    ],
};

static ENV_VAR: Schema = Schema {
    name: "EnvVar",
    fields: &[
        f(1, "name", Str),
        f(2, "value", Str),
        f(3, "valueFrom", Msg(&ENV_SOURCE)),
    ],
};

static REF_SOURCE: Schema = Schema {
    name: "EnvSource",
    fields: &[f(1, "", Inline(&LOCAL_REF)), f(2, "optional", Bool)],
};

static ENV_FROM: Schema = Schema {
    name: "EnvFromSource",
    fields: &[
        f(1, "prefix", Str),
        f(2, "configMapRef", Msg(&REF_SOURCE)),
        f(3, "secretRef", Msg(&REF_SOURCE)),
    ],
};

static RESOURCES: Schema = Schema {
    name: "ResourceRequirements",
    fields: &[f(1, "limits", QuantityMap), f(2, "requests", QuantityMap)],
};

static VOLUME_MOUNT: Schema = Schema {
    name: "VolumeMount",
    fields: &[
        f(1, "name", Str),
        f(2, "readOnly", Bool),
        f(3, "mountPath", Str),
        f(4, "subPath", Str),
        f(5, "mountPropagation", Str),
        f(6, "subPathExpr", Str),
        f(7, "recursiveReadOnly", Str),
    ],
};

static CONTAINER_PORT: Schema = Schema {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Str),
        f(2, "hostPort", Int),
        f(3, "containerPort", Int),
        f(4, "protocol", Str),
        f(5, "hostIP", Str),
    ],
};

static CONTAINER: Schema = Schema {
    name: "Container",
    fields: &[
        f(1, "name", Str),
        f(2, "image", Str),
        r(3, "command", Str),
        r(4, "args", Str),
        f(5, "workingDir", Str),
        r(6, "ports", Msg(&CONTAINER_PORT)),
        r(7, "env", Msg(&ENV_VAR)),
        f(8, "resources", Msg(&RESOURCES)),
        r(9, "volumeMounts", Msg(&VOLUME_MOUNT)),
        f(13, "terminationMessagePath", Str),
        f(14, "imagePullPolicy", Str),
        f(16, "stdin", Bool),
        f(17, "stdinOnce", Bool),
        f(18, "tty", Bool),
        r(19, "envFrom", Msg(&ENV_FROM)),
        f(20, "terminationMessagePolicy", Str),
        f(24, "restartPolicy", Str),
    ],
};

static KEY_TO_PATH: Schema = Schema {
    name: "KeyToPath",
    fields: &[f(1, "key", Str), f(2, "path", Str), f(3, "mode", Int)],
};

static SECRET_VOLUME: Schema = Schema {
    name: "SecretVolumeSource",
    fields: &[
        f(1, "secretName", Str),
        r(2, "items", Msg(&KEY_TO_PATH)),
        f(3, "defaultMode", Int),
        f(4, "optional", Bool),
    ],
};

static CONFIG_MAP_VOLUME: Schema = Schema {
    name: "ConfigMapVolumeSource",
    fields: &[
        f(1, "", Inline(&LOCAL_REF)),
        r(2, "items", Msg(&KEY_TO_PATH)),
        f(3, "defaultMode", Int),
        f(4, "optional", Bool),
    ],
};

static EMPTY_DIR: Schema = Schema {
    name: "EmptyDirVolumeSource",
    fields: &[f(1, "medium", Str), f(2, "sizeLimit", Quantity)],
};

static VOLUME_SOURCE: Schema = Schema {
    name: "VolumeSource",
    fields: &[
        f(2, "emptyDir", Msg(&EMPTY_DIR)),
        f(6, "secret", Msg(&SECRET_VOLUME)),
        f(19, "configMap", Msg(&CONFIG_MAP_VOLUME)),
    ],
};

static VOLUME: Schema = Schema {
    name: "Volume",
    fields: &[f(1, "name", Str), f(2, "", Inline(&VOLUME_SOURCE))],
};

static POD_SPEC: Schema = Schema {
    name: "PodSpec",
    fields: &[
        r(1, "volumes", Msg(&VOLUME)),
        r(2, "containers", Msg(&CONTAINER)),
        f(3, "restartPolicy", Str),
        f(4, "terminationGracePeriodSeconds", Int),
        f(5, "activeDeadlineSeconds", Int),
        f(6, "dnsPolicy", Str),
        f(7, "nodeSelector", StrMap),
        f(8, "serviceAccountName", Str),
        f(9, "serviceAccount", Str),
        r(15, "imagePullSecrets", Msg(&LOCAL_REF)),
        f(19, "schedulerName", Str),
        r(20, "initContainers", Msg(&CONTAINER)),
        f(21, "automountServiceAccountToken", Bool),
        f(24, "priorityClassName", Str),
        f(25, "priority", Int),
        f(30, "enableServiceLinks", Bool),
    ],
};

static POD_TEMPLATE: Schema = Schema {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&POD_SPEC)),
    ],
};

static JOB_SPEC: Schema = Schema {
    name: "JobSpec",
    fields: &[
        f(1, "parallelism", Int),
        f(2, "completions", Int),
        f(3, "activeDeadlineSeconds", Int),
        f(4, "selector", Msg(&LABEL_SELECTOR)),
        f(5, "manualSelector", Bool),
        f(6, "template", Msg(&POD_TEMPLATE)),
        f(7, "backoffLimit", Int),
        f(8, "ttlSecondsAfterFinished", Int),
        f(9, "completionMode", Str),
        f(10, "suspend", Bool),
        f(12, "backoffLimitPerIndex", Int),
        f(13, "maxFailedIndexes", Int),
        f(14, "podReplacementPolicy", Str),
        f(15, "managedBy", Str),
    ],
};

static JOB: Schema = Schema {
    name: "Job",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&JOB_SPEC)),
    ],
};

/// The body's kind has no schema here, or a field is outside it.
pub(crate) struct Undecodable(pub(crate) String);

/// Decodes a protobuf request body for `kind` (only `Job` so far).
pub(crate) fn decode_object(kind: &str, body: &[u8]) -> Result<Value, Undecodable> {
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| Undecodable("the protobuf body does not start with the k8s magic".into()))?;
    let mut raw = None;
    let mut type_kind = String::new();
    for (num, wire) in fields(envelope)? {
        match (num, wire) {
            (1, Wire::Bytes(meta)) => {
                for (n, w) in fields(meta)? {
                    if let (2, Wire::Bytes(k)) = (n, w) {
                        type_kind = String::from_utf8_lossy(k).into_owned();
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = Some(bytes),
            _ => {}
        }
    }
    let schema = match (kind, type_kind.as_str()) {
        ("Job", "Job") => &JOB,
        _ => {
            return Err(Undecodable(format!(
                "this server decodes protobuf only for Job, not {type_kind:?}; send application/json"
            )));
        }
    };
    message(schema, raw.unwrap_or_default())
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, Undecodable> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or_else(|| Undecodable("truncated protobuf varint".into()))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Undecodable("protobuf varint too long".into()))
}

fn fields(bytes: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, Undecodable> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(bytes, &mut at)?),
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?)
                    .map_err(|_| Undecodable("protobuf length too large".into()))?;
                let end = at
                    .checked_add(len)
                    .filter(|end| *end <= bytes.len())
                    .ok_or_else(|| Undecodable("truncated protobuf field".into()))?;
                let slice = &bytes[at..end];
                at = end;
                Wire::Bytes(slice)
            }
            1 => {
                at += 8;
                Wire::Fixed
            }
            5 => {
                at += 4;
                Wire::Fixed
            }
            other => {
                return Err(Undecodable(format!(
                    "unsupported protobuf wire type {other}"
                )));
            }
        };
        out.push((key >> 3, wire));
    }
    Ok(out)
}

fn message(schema: &Schema, bytes: &[u8]) -> Result<Value, Undecodable> {
    let mut object = Map::new();
    decode_into(schema, bytes, &mut object)?;
    Ok(Value::Object(object))
}

fn decode_into(
    schema: &Schema,
    bytes: &[u8],
    object: &mut Map<String, Value>,
) -> Result<(), Undecodable> {
    for (num, wire) in fields(bytes)? {
        let Some(field) = schema.fields.iter().find(|f| f.num == num) else {
            // Go writes every non-pointer field, zero or not; a zero value
            // is what JSON would omit, so it says nothing.
            if is_zero(&wire) {
                continue;
            }
            return Err(Undecodable(format!(
                "field {num} of {} is not decoded by this server; send application/json",
                schema.name
            )));
        };
        let value = match (field.ty, wire) {
            (Inline(inner), Wire::Bytes(b)) => {
                decode_into(inner, b, object)?;
                continue;
            }
            (Str, Wire::Bytes(b)) => {
                let text = String::from_utf8_lossy(b).into_owned();
                // Go writes empty non-pointer strings; JSON omits them.
                if text.is_empty() && !field.repeated {
                    continue;
                }
                Value::String(text)
            }
            (Int, Wire::Varint(v)) => json!(v as i64),
            (Bool, Wire::Varint(v)) => json!(v != 0),
            (Time, Wire::Bytes(b)) => match time_of(b)? {
                Some(t) => Value::String(t),
                None => continue,
            },
            (Quantity, Wire::Bytes(b)) => quantity(b)?,
            (Msg(inner), Wire::Bytes(b)) => message(inner, b)?,
            (StrMap | QuantityMap, Wire::Bytes(b)) => {
                let (key, value) = map_entry(b, matches!(field.ty, QuantityMap))?;
                let map = object
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
                continue;
            }
            _ => {
                return Err(Undecodable(format!(
                    "field {} of {} has an unexpected protobuf wire type",
                    field.name, schema.name
                )));
            }
        };
        if field.repeated {
            let list = object
                .entry(field.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                list.push(value);
            }
        } else {
            object.insert(field.name.to_owned(), value);
        }
    }
    Ok(())
}

/// A zero varint, or bytes that are empty or hold only zero fields (an
/// empty Go struct written in place).
fn is_zero(wire: &Wire<'_>) -> bool {
    match wire {
        Wire::Varint(v) => *v == 0,
        Wire::Bytes(b) => fields(b).is_ok_and(|inner| inner.iter().all(|(_, w)| is_zero(w))),
        Wire::Fixed => false,
    }
}

fn map_entry(bytes: &[u8], quantities: bool) -> Result<(String, Value), Undecodable> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (num, wire) in fields(bytes)? {
        match (num, wire) {
            (1, Wire::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, Wire::Bytes(b)) if quantities => value = quantity(b)?,
            (2, Wire::Bytes(b)) => value = Value::String(String::from_utf8_lossy(b).into_owned()),
            _ => {}
        }
    }
    Ok((key, value))
}

fn quantity(bytes: &[u8]) -> Result<Value, Undecodable> {
    for (num, wire) in fields(bytes)? {
        if let (1, Wire::Bytes(b)) = (num, wire) {
            return Ok(Value::String(String::from_utf8_lossy(b).into_owned()));
        }
    }
    Ok(Value::String("0".into()))
}

/// `None` for the zero time, which JSON writes as null and then omits.
fn time_of(bytes: &[u8]) -> Result<Option<String>, Undecodable> {
    let mut seconds = 0i64;
    for (num, wire) in fields(bytes)? {
        if let (1, Wire::Varint(v)) = (num, wire) {
            seconds = v as i64;
        }
    }
    if seconds == 0 {
        return Ok(None);
    }
    Ok(OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(num: u64, wire: u64) -> u8 {
        u8::try_from((num << 3) | wire).unwrap()
    }

    fn bytes(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![key(num, 2), u8::try_from(payload.len()).unwrap()];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_job_envelope_decodes_to_its_json_and_unknown_fields_are_refused() {
        let meta = [
            bytes(1, b"sync"),
            bytes(12, &[bytes(1, b"a"), bytes(2, b"b")].concat()),
        ]
        .concat();
        let spec = [vec![key(7, 0), 3]].concat();
        let job = [bytes(1, &meta), bytes(2, &spec)].concat();
        let type_meta = [bytes(1, b"batch/v1"), bytes(2, b"Job")].concat();
        let body = [b"k8s\0".to_vec(), bytes(1, &type_meta), bytes(2, &job)].concat();
        let Ok(decoded) = decode_object("Job", &body) else {
            panic!("the job did not decode");
        };
        assert_eq!(
            decoded,
            json!({ "metadata": { "name": "sync", "annotations": { "a": "b" } }, "spec": { "backoffLimit": 3 } })
        );
        let odd = [
            bytes(1, &type_meta),
            bytes(2, &[bytes(1, &meta), bytes(15, b"x")].concat()),
        ]
        .concat();
        let Err(Undecodable(message)) = decode_object("Job", &[b"k8s\0".to_vec(), odd].concat())
        else {
            panic!("an unknown field was accepted");
        };
        assert_eq!(
            message,
            "field 15 of Job is not decoded by this server; send application/json"
        );
    }
}
