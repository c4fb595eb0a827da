//! End-to-end tests of the runner binary against moto (started per test) and the in-memory
//! controller. moto must install and start: these tests fail, never skip, when it cannot.

mod asg;
mod common;
mod ec2;
mod ecs;
mod eks;
mod enforce;
mod errors;
mod noop;
mod rds;
mod safety;
mod slow_proxy;
mod waiting;
