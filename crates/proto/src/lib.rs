//! Generated gRPC types and stubs for every Verdant API.

#![allow(clippy::pedantic, missing_docs)]

/// The encoded `FileDescriptorSet` of every Verdant proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/verdant_descriptor.bin"));

pub mod broker {
    pub mod v1 {
        tonic::include_proto!("verdant.broker.v1");
    }
}

pub mod daemon {
    pub mod v1 {
        tonic::include_proto!("verdant.daemon.v1");
    }
}

pub mod discovery {
    pub mod v1 {
        tonic::include_proto!("verdant.discovery.v1");
    }
}

pub mod lambda {
    pub mod v1 {
        tonic::include_proto!("verdant.lambda.v1");
    }
}

pub mod ota {
    pub mod v1 {
        tonic::include_proto!("verdant.ota.v1");
    }
}

pub mod router {
    pub mod v1 {
        tonic::include_proto!("verdant.router.v1");
    }
}

pub mod secrets {
    pub mod v1 {
        tonic::include_proto!("verdant.secrets.v1");
    }
}

pub mod shadow {
    pub mod v1 {
        tonic::include_proto!("verdant.shadow.v1");
    }
}

pub mod supervisor {
    pub mod v1 {
        tonic::include_proto!("verdant.supervisor.v1");
    }
}
