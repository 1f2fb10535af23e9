//! The Kafka APIs this listener serves and their versions: what ApiVersions advertises and
//! what the dispatch (`apis`) accepts.
//!
//! Versions are Kafka's non-flexible ones (ApiVersions aside), chosen to look like one real
//! Kafka release, because some clients guess the broker's version from the maxima. A request
//! for an API or version missing here closes its connection (Kafka does the same), except
//! ApiVersions, which answers UNSUPPORTED_VERSION with its v0 body so the client can retry
//! with a version it finds in the answer.

use kafka_protocol::messages::ApiKey;

/// One served API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub api_key: ApiKey,
    /// The versions advertised.
    pub min: i16,
    pub max: i16,
}

/// Every API served, in API key order.
pub const SERVED: &[Served] = &[
    // v0–2 answered UNSUPPORTED_FOR_MESSAGE_FORMAT (see `produce`).
    Served {
        api_key: ApiKey::Produce,
        min: 0,
        max: 7,
    },
    Served {
        api_key: ApiKey::Fetch,
        min: 4,
        max: 10,
    },
    Served {
        api_key: ApiKey::ListOffsets,
        min: 1,
        max: 4,
    },
    Served {
        api_key: ApiKey::Metadata,
        min: 0,
        max: 7,
    },
    Served {
        api_key: ApiKey::OffsetCommit,
        min: 2,
        max: 6,
    },
    Served {
        api_key: ApiKey::OffsetFetch,
        min: 1,
        max: 5,
    },
    Served {
        api_key: ApiKey::FindCoordinator,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::JoinGroup,
        min: 0,
        max: 3,
    },
    Served {
        api_key: ApiKey::Heartbeat,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::LeaveGroup,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::SyncGroup,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::DescribeGroups,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::ListGroups,
        min: 0,
        max: 2,
    },
    // v0 is advertised because librdkafka (kcat) enables SASL only when it is, as Kafka
    // does; a v0 request (raw SASL tokens after it, not SaslAuthenticate) is refused in
    // `sasl`: clients that know v1 send v1.
    Served {
        api_key: ApiKey::SaslHandshake,
        min: 0,
        max: 1,
    },
    Served {
        api_key: ApiKey::ApiVersions,
        min: 0,
        max: 3,
    },
    Served {
        api_key: ApiKey::CreateTopics,
        min: 2,
        max: 3,
    },
    Served {
        api_key: ApiKey::DeleteTopics,
        min: 1,
        max: 3,
    },
    Served {
        api_key: ApiKey::InitProducerId,
        min: 0,
        max: 1,
    },
    Served {
        api_key: ApiKey::DescribeConfigs,
        min: 1,
        max: 2,
    },
    Served {
        api_key: ApiKey::SaslAuthenticate,
        min: 0,
        max: 1,
    },
];

/// The served API of `api_key`, if `version` is one it serves.
pub fn served(api_key: i16, version: i16) -> Option<ApiKey> {
    SERVED
        .iter()
        .find(|served| served.api_key as i16 == api_key)
        .filter(|served| (served.min..=served.max).contains(&version))
        .map(|served| served.api_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_key_order_with_valid_ranges() {
        for pair in SERVED.windows(2) {
            assert!(
                (pair[0].api_key as i16) < (pair[1].api_key as i16),
                "{pair:?}"
            );
        }
        for served in SERVED {
            assert!(served.min <= served.max, "{served:?}");
        }
        assert_eq!(served(ApiKey::Metadata as i16, 7), Some(ApiKey::Metadata));
        assert_eq!(served(ApiKey::Metadata as i16, 8), None);
        assert_eq!(served(-1, 0), None);
    }
}
