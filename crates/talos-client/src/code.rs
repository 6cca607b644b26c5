//! The gRPC status code a node answered with, as this crate's own type.

use std::fmt;

/// A gRPC status code, as carried by [`TalosError::Api`](crate::TalosError::Api).
///
/// It mirrors the 17 codes of the gRPC specification so that callers can match on the code a node
/// answered without depending on the gRPC library this crate uses. [`Code::as_str`] gives the
/// canonical CamelCase name (`FailedPrecondition`, `Unimplemented`, …), which is also its
/// `Display` text. New codes, should gRPC ever define any, would be added as new variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Not an error.
    Ok,
    /// The operation was cancelled.
    Cancelled,
    /// An error without a more specific code (apid also uses it for proxy failures).
    Unknown,
    /// The request's arguments are invalid, whatever the node's state.
    InvalidArgument,
    /// A deadline passed before the operation completed.
    DeadlineExceeded,
    /// The thing asked for was not found.
    NotFound,
    /// The thing to create already exists.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A resource (quota, memory, message size) is exhausted.
    ResourceExhausted,
    /// The node is not in a state that allows the operation.
    FailedPrecondition,
    /// The operation was aborted (a conflict, or a failed run).
    Aborted,
    /// The operation went past a valid range.
    OutOfRange,
    /// The node does not implement the operation.
    Unimplemented,
    /// An internal error on the server.
    Internal,
    /// The service is unavailable; retrying may help.
    Unavailable,
    /// Data was lost or corrupted.
    DataLoss,
    /// The request lacks valid credentials.
    Unauthenticated,
}

impl Code {
    /// Every code, in the order of their numbers (0 to 16).
    pub const ALL: [Code; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code's canonical name, e.g. `FailedPrecondition`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "Ok",
            Self::Cancelled => "Cancelled",
            Self::Unknown => "Unknown",
            Self::InvalidArgument => "InvalidArgument",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::PermissionDenied => "PermissionDenied",
            Self::ResourceExhausted => "ResourceExhausted",
            Self::FailedPrecondition => "FailedPrecondition",
            Self::Aborted => "Aborted",
            Self::OutOfRange => "OutOfRange",
            Self::Unimplemented => "Unimplemented",
            Self::Internal => "Internal",
            Self::Unavailable => "Unavailable",
            Self::DataLoss => "DataLoss",
            Self::Unauthenticated => "Unauthenticated",
        }
    }

    /// The code's number on the wire (0 to 16).
    pub const fn number(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<tonic::Code> for Code {
    fn from(code: tonic::Code) -> Self {
        use tonic::Code as T;
        match code {
            T::Ok => Self::Ok,
            T::Cancelled => Self::Cancelled,
            T::Unknown => Self::Unknown,
            T::InvalidArgument => Self::InvalidArgument,
            T::DeadlineExceeded => Self::DeadlineExceeded,
            T::NotFound => Self::NotFound,
            T::AlreadyExists => Self::AlreadyExists,
            T::PermissionDenied => Self::PermissionDenied,
            T::ResourceExhausted => Self::ResourceExhausted,
            T::FailedPrecondition => Self::FailedPrecondition,
            T::Aborted => Self::Aborted,
            T::OutOfRange => Self::OutOfRange,
            T::Unimplemented => Self::Unimplemented,
            T::Internal => Self::Internal,
            T::Unavailable => Self::Unavailable,
            T::DataLoss => Self::DataLoss,
            T::Unauthenticated => Self::Unauthenticated,
        }
    }
}

impl From<Code> for tonic::Code {
    fn from(code: Code) -> Self {
        tonic::Code::from_i32(code.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_code_keeps_its_number_and_name() {
        for n in 0..17 {
            let tonic = tonic::Code::from_i32(n);
            let ours = Code::from(tonic);
            assert_eq!(ours.number(), n);
            assert_eq!(ours, Code::ALL[n as usize]);
            // The name is tonic's Debug spelling, the one messages carried before this type.
            assert_eq!(ours.as_str(), format!("{tonic:?}"));
            assert_eq!(ours.to_string(), ours.as_str());
            assert_eq!(tonic::Code::from(ours), tonic);
        }
    }
}
