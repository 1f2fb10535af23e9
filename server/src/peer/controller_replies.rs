//! What the peer service's controller requests (BootstrapUser, SetKafkaAddress) propose
//! through this node, the controller's leader.

use tonic::Status;

use crate::replication::DriverHandle;

/// Longest Kafka address a node may record (a host name and a port).
pub(super) const KAFKA_ADDRESS_BYTES_MAX: usize = 300;

/// Proposes `command` to the controller through this node (its leader) and returns the
/// machine's outcome; another node leading is FAILED_PRECONDITION, a failed proposal
/// UNAVAILABLE.
pub(super) async fn propose_controller_command(
    driver: &DriverHandle,
    now_ms: i64,
    command: &crate::controller::metadata::Command,
) -> Result<Result<(), crate::controller::metadata::CommandRefusal>, Status> {
    use crate::controller::machine::Controller;
    use crate::replication::{CONTROLLER, ProposeError};
    let committed = driver
        .propose::<Controller>(CONTROLLER, command.to_batch(now_ms))
        .await
        .map_err(|error| match error {
            ProposeError::NotLeader { leader_id } => Status::failed_precondition(format!(
                "this node does not lead the controller (its leader is node {leader_id})"
            )),
            other => Status::unavailable(other.to_string()),
        })?;
    Ok(committed.outcome)
}

pub(super) async fn bootstrap_user_reply(
    driver: &DriverHandle,
    now_ms: i64,
    request: strata_proto::v1::BootstrapUserRequest,
) -> Result<strata_proto::v1::BootstrapUserResponse, Status> {
    use crate::controller::metadata::CommandRefusal;
    crate::controller::security::validate_user_name(&request.name)
        .map_err(Status::invalid_argument)?;
    let credential = crate::security::scram::ScramCredential {
        salt: request.salt.to_vec(),
        iterations: request.iterations,
        stored_key: request.stored_key.to_vec(),
        server_key: request.server_key.to_vec(),
    };
    credential
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let command = crate::broker::security::bootstrap_command(request.name, credential);
    match propose_controller_command(driver, now_ms, &command).await? {
        Ok(()) => Ok(strata_proto::v1::BootstrapUserResponse { created: true }),
        Err(CommandRefusal::UsersExist) => {
            Ok(strata_proto::v1::BootstrapUserResponse { created: false })
        }
        Err(refusal) => Err(Status::invalid_argument(refusal.to_string())),
    }
}
