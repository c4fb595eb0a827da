//! Hibernator's shared core: the API types (CRDs), the schedule engine, the execution graph
//! and validation. Pure code: no I/O, no clock; the controller, the runner and the CLI use
//! this one copy.
#![warn(missing_docs)]
// kube's `printcolumn(...)` attributes repeat `type_ = "string"`, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod calendar;
pub mod common;
pub mod connector;
pub mod crds;
pub mod exception;
pub mod fixtures;
pub mod graph;
pub mod naming;
pub mod notification;
pub mod params;
pub mod plan;
pub mod restore;
pub mod runner;
pub mod savings;
pub mod schedule;
pub mod status;
pub mod validate;
pub mod wishes;

pub use common::{DayOfWeek, OffHourWindow};
pub use connector::{CloudProvider, CloudProviderSpec, K8SCluster, K8SClusterSpec};
pub use exception::{ExceptionType, ScheduleException, ScheduleExceptionSpec};
pub use notification::{HibernationNotification, HibernationNotificationSpec};
pub use params::{TargetParameters, TargetType};
pub use plan::{
    HibernationPlan, HibernationPlanSpec, HibernationPlanStatus, Operation, Phase, TargetState,
};
