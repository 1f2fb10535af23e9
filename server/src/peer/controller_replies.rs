//! What the peer service's controller requests (BootstrapUser, SetKafkaAddress,
//! ProposeCapture) propose through this node, the controller's leader.

use tonic::Status;

use crate::replication::DriverHandle;

/// Longest Kafka address a node may record (a host name and a port).
const KAFKA_ADDRESS_BYTES_MAX: usize = 300;

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

/// A partition leader's capture command (`Peer/ProposeCapture`): `bytes` must decode as
/// `CaptureWindowOpen` or `CaptureWindowDone` (any other command is refused); Done's time is
/// stamped here, since time in the metadata is the controller leader's. `Ok(Some(why))` when
/// the position had moved (the compare-and-set refused it).
pub(super) async fn propose_capture(
    driver: &DriverHandle,
    now_ms: i64,
    bytes: &[u8],
) -> Result<Option<String>, Status> {
    use crate::controller::metadata::{Command, CommandRefusal};
    let mut command: Command = serde_json::from_slice(bytes).map_err(|error| {
        Status::invalid_argument(format!("the capture command does not decode: {error}"))
    })?;
    match &mut command {
        Command::CaptureWindowOpen { .. } => {}
        Command::CaptureWindowDone {
            now_ms: stamped, ..
        } => *stamped = now_ms,
        _ => {
            return Err(Status::invalid_argument(
                "Peer/ProposeCapture takes only CaptureWindowOpen and CaptureWindowDone",
            ));
        }
    }
    match propose_controller_command(driver, now_ms, &command).await? {
        Ok(()) => Ok(None),
        Err(CommandRefusal::CaptureMoved(why)) => Ok(Some(why)),
        Err(refusal) => Err(Status::invalid_argument(refusal.to_string())),
    }
}

/// `Peer/SetKafkaAddress` once its sender is known to speak for `request.node_id`: the address
/// must be HOST:PORT within [`KAFKA_ADDRESS_BYTES_MAX`] bytes.
pub(super) async fn set_kafka_address_reply(
    driver: &DriverHandle,
    now_ms: i64,
    request: strata_proto::v1::SetKafkaAddressRequest,
) -> Result<strata_proto::v1::SetKafkaAddressResponse, Status> {
    if let Some(address) = &request.kafka_address {
        let valid = address.len() <= KAFKA_ADDRESS_BYTES_MAX
            && address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(Status::invalid_argument(format!(
                "Kafka address {:?} is not HOST:PORT (at most {KAFKA_ADDRESS_BYTES_MAX} bytes)",
                address
                    .chars()
                    .take(KAFKA_ADDRESS_BYTES_MAX)
                    .collect::<String>()
            )));
        }
    }
    let command = crate::controller::metadata::Command::SetKafkaAddress {
        node: request.node_id,
        kafka_address: request.kafka_address,
    };
    propose_controller_command(driver, now_ms, &command)
        .await?
        .map_err(|refusal| Status::invalid_argument(refusal.to_string()))?;
    Ok(strata_proto::v1::SetKafkaAddressResponse {})
}
