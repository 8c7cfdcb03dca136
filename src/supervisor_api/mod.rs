//! The device supervisor's HTTP API, for what an app around its own update
//! lock needs: `force-update` (`POST /v1/update` with
//! `{"force":true,"cancel":true}`, which overrides update locks), `status --supervisor` (`GET /v1/device`:
//! is an update waiting?) and `--update-now` (after the lock is gone: ask
//! once, then `POST /v1/update` with `{"force":false,"cancel":true}`, so a
//! pending update starts now instead of after the supervisor's backoff).
//!
//! The supervisor tells a service where its API is and which key to use
//! through `BALENA_SUPERVISOR_ADDRESS` / `BALENA_SUPERVISOR_API_KEY` (or the
//! older `RESIN_` names) when the service has the
//! `io.balena.features.supervisor-api` label. This module knows the
//! endpoints, the key, and what each answer means; `http` carries one
//! request and its answer. Every request is bounded in time (connecting
//! and the whole exchange), every answer in size; the API key never
//! reaches a message (the `apikey=` value of a URL is masked, and a key of
//! real length also where the supervisor echoes it verbatim),
//! and text from an answer reaches one with its control characters escaped.
//!
//! `client` finds the API and carries one request; `device`, `update` and
//! `tags` are the endpoints, each in its file.

mod client;
mod device;
pub mod http;
pub mod tags;
mod update;

pub(crate) use client::Config;
pub(crate) use device::{DeviceInfo, device_from_env};
pub(crate) use update::{FORCE_BODY, UPDATE_NOW_BODY, UpdateNow, force_update, update_now};
