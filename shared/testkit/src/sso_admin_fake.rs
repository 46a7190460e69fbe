//! A stateful fake of the parts of the AWS SSO Admin API (IAM Identity Center) that account
//! assignments use, on `127.0.0.1:0`. moto 5.2.5 implements these calls but answers
//! `CreateAccountAssignment` and `DescribeAccountAssignmentCreationStatus` without the
//! `Status` field the real service always returns (and makes the assignment exist at once),
//! so a client that polls the status as AWS documents cannot be tested against it.
//!
//! # What it models (AWS JSON 1.1: `POST /`, `X-Amz-Target: SWBExternalService.ACTION`)
//! * `CreateAccountAssignment` (`InstanceArn`, `TargetId`, `TargetType = AWS_ACCOUNT`,
//!   `PermissionSetArn`, `PrincipalType`, `PrincipalId`) → `AccountAssignmentCreationStatus`
//!   with `Status = IN_PROGRESS` and a `RequestId`; the assignment is provisioned (and listed)
//!   after [`FakeSsoAdmin::polls_until_done`] status reads (default 1). A permission set
//!   marked with [`FakeSsoAdmin::fail_permission_set`] ends `FAILED` with a `FailureReason`.
//! * `DescribeAccountAssignmentCreationStatus` (`InstanceArn`,
//!   `AccountAssignmentCreationRequestId`) → the request's status; unknown id → 400
//!   `ResourceNotFoundException`.
//! * `ListAccountAssignments` (`InstanceArn`, `AccountId`, `PermissionSetArn`, `MaxResults`,
//!   `NextToken`) → `AccountAssignments` (provisioned only), paged.
//! * An unknown instance ARN → 400 `ResourceNotFoundException`; a missing field → 400
//!   `ValidationException`; errors carry `__type` and `x-amzn-ErrorType` like AWS.
//!
//! # What it does not model
//! SigV4 (any signature is accepted), deletion, permission-set provisioning, every other action
//! (400 `UnknownOperationException`).

use axum::body::to_bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One account assignment: (account, permission set, principal type, principal id).
pub type FakeAssignment = (String, String, String, String);

struct Creation {
    id: String,
    assignment: FakeAssignment,
    polls_left: u32,
    failed: bool,
}

struct State {
    instance_arn: String,
    polls_until_done: u32,
    failing: BTreeSet<String>,
    requests: Vec<Creation>,
    provisioned: BTreeSet<FakeAssignment>,
    calls: Vec<String>,
}

/// Handle to a running fake SSO Admin API. Cheap to clone.
#[derive(Clone)]
pub struct FakeSsoAdmin {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeSsoAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSsoAdmin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeSsoAdmin {
    /// The instance every call must name.
    pub const INSTANCE_ARN: &'static str = "arn:aws:sso:::instance/ssoins-0123456789abcdef";

    /// Binds `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> Self {
        let (listener, addr) = crate::server::bind("fake sso-admin").await;
        let state = Arc::new(Mutex::new(State {
            instance_arn: Self::INSTANCE_ARN.into(),
            polls_until_done: 1,
            failing: BTreeSet::new(),
            requests: Vec::new(),
            provisioned: BTreeSet::new(),
            calls: Vec::new(),
        }));
        let app = axum::Router::new().fallback(serve).with_state(state.clone());
        let server = crate::server::spawn("fake sso-admin", listener, app);
        FakeSsoAdmin {
            state,
            addr,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Status reads a creation stays `IN_PROGRESS` for.
    pub fn polls_until_done(&self, n: u32) {
        self.lock().polls_until_done = n;
    }

    /// Creations of assignments of this permission set end `FAILED`.
    pub fn fail_permission_set(&self, arn: &str) {
        self.lock().failing.insert(arn.to_string());
    }

    /// Every provisioned assignment.
    pub fn assignments(&self) -> BTreeSet<FakeAssignment> {
        self.lock().provisioned.clone()
    }

    /// The actions called, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }
}

fn error(kind: &str, message: &str) -> Response {
    let mut r = (
        StatusCode::BAD_REQUEST,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        )],
        json!({ "__type": kind, "message": message }).to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn status_json(r: &Creation) -> Value {
    let status = if r.failed && r.polls_left == 0 {
        "FAILED"
    } else if r.polls_left == 0 {
        "SUCCEEDED"
    } else {
        "IN_PROGRESS"
    };
    let (account, ps, ptype, pid) = &r.assignment;
    let mut v = json!({
        "Status": status,
        "RequestId": r.id,
        "TargetId": account,
        "TargetType": "AWS_ACCOUNT",
        "PermissionSetArn": ps,
        "PrincipalType": ptype,
        "PrincipalId": pid,
        "CreatedDate": 1_700_000_000.0,
    });
    if status == "FAILED" {
        v["FailureReason"] = json!("the permission set could not be provisioned to the account");
    }
    v
}

async fn serve(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let action = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("SWBExternalService."))
        .unwrap_or_default()
        .to_string();
    let Ok(body) = to_bytes(req.into_body(), 1 << 20).await else {
        return error("ValidationException", "body too large");
    };
    let Ok(p) = serde_json::from_slice::<Value>(&body) else {
        return error("SerializationException", "body is not json");
    };
    let field = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    s.calls.push(action.clone());
    if field("InstanceArn").as_deref() != Some(s.instance_arn.as_str()) {
        return error("ResourceNotFoundException", "instance not found");
    }
    match action.as_str() {
        "CreateAccountAssignment" => {
            let (Some(account), Some(ps), Some(ptype), Some(pid)) = (
                field("TargetId"),
                field("PermissionSetArn"),
                field("PrincipalType"),
                field("PrincipalId"),
            ) else {
                return error("ValidationException", "a required field is missing");
            };
            if field("TargetType").as_deref() != Some("AWS_ACCOUNT") {
                return error("ValidationException", "TargetType must be AWS_ACCOUNT");
            }
            let r = Creation {
                id: uuid::Uuid::new_v4().to_string(),
                failed: s.failing.contains(&ps),
                assignment: (account, ps, ptype, pid),
                polls_left: s.polls_until_done,
            };
            let body = json!({ "AccountAssignmentCreationStatus": status_json(&r) });
            settle(&mut s, r);
            ok(body)
        }
        "DescribeAccountAssignmentCreationStatus" => {
            let id = field("AccountAssignmentCreationRequestId").unwrap_or_default();
            let Some(i) = s.requests.iter().position(|r| r.id == id) else {
                return error("ResourceNotFoundException", "request not found");
            };
            let r = &mut s.requests[i];
            r.polls_left = r.polls_left.saturating_sub(1);
            let body = json!({ "AccountAssignmentCreationStatus": status_json(r) });
            let r = s.requests.remove(i);
            settle(&mut s, r);
            ok(body)
        }
        "ListAccountAssignments" => {
            let (Some(account), Some(ps)) = (field("AccountId"), field("PermissionSetArn")) else {
                return error(
                    "ValidationException",
                    "AccountId and PermissionSetArn are required",
                );
            };
            let max = p
                .get("MaxResults")
                .and_then(Value::as_u64)
                .unwrap_or(20)
                .clamp(1, 100) as usize;
            let start: usize = field("NextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
            let all: Vec<Value> = s
                .provisioned
                .iter()
                .filter(|(a, p, _, _)| *a == account && *p == ps)
                .map(|(a, p, t, id)| {
                    json!({ "AccountId": a, "PermissionSetArn": p, "PrincipalType": t, "PrincipalId": id })
                })
                .collect();
            let page: Vec<Value> = all.iter().skip(start).take(max).cloned().collect();
            let mut body = json!({ "AccountAssignments": page });
            if start + max < all.len() {
                body["NextToken"] = json!((start + max).to_string());
            }
            ok(body)
        }
        other => error(
            "UnknownOperationException",
            &format!("unknown operation {other:?}"),
        ),
    }
}

/// Keep a creation request (later status reads see its final status); once it succeeded, its
/// assignment is provisioned.
fn settle(s: &mut State, r: Creation) {
    if r.polls_left == 0 && !r.failed {
        s.provisioned.insert(r.assignment.clone());
    }
    s.requests.push(r);
}
