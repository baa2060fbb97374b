//! gRPC server reflection in both protocol versions.
//!
//! grpcurl before 1.8.8 and Python's grpcio-reflection speak only `grpc.reflection.v1alpha`;
//! newer clients prefer `grpc.reflection.v1`. Serving both, with our descriptors and the health
//! service's, lets `grpcurl -plaintext ADDR list` and `describe` work with no .proto files.

use tonic_reflection::server::{v1, v1alpha};

/// Error building a reflection service (only possible with corrupt descriptor sets).
pub use tonic_reflection::server::Error as ReflectionError;

/// Returns the `grpc.reflection.v1` service over qtrail's and gRPC health's descriptors.
///
/// # Errors
/// [`ReflectionError`] if an embedded descriptor set does not decode.
pub fn v1() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, ReflectionError> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qtrail_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// Returns the `grpc.reflection.v1alpha` service over the same descriptors as [`v1`].
///
/// # Errors
/// [`ReflectionError`] if an embedded descriptor set does not decode.
pub fn v1alpha() -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, ReflectionError> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qtrail_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
}
