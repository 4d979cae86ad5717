//! The model hub: which registered model answers predictions. Activation
//! loads the new model first and swaps it in atomically, so requests in flight
//! finish on the previous one.

use super::model::Model;
use super::registry::{Registry, RegistryError};
use candle_core::Device;
use cxr_models::weights::WeightsError;
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("no model {0:?}")]
    UnknownModel(String),
    #[error("loading model {id}: {source}")]
    Load {
        id: String,
        #[source]
        source: Box<WeightsError>,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

pub struct ModelHub {
    reg: Arc<dyn Registry>,
    device: Device,
    active: RwLock<Option<Arc<Model>>>,
    activating: Mutex<()>,
}

impl ModelHub {
    /// A hub with no active model (see [`ModelHub::restore`]).
    pub fn new(reg: Arc<dyn Registry>, device: Device) -> Self {
        Self {
            reg,
            device,
            active: RwLock::new(None),
            activating: Mutex::new(()),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model answering predictions now.
    pub fn active(&self) -> Option<Arc<Model>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The registry's active model id, if it is loaded.
    pub fn active_id(&self) -> Option<String> {
        self.active().map(|m| m.id.clone())
    }

    /// At start-up: loads the model the registry marks active, if any.
    /// A model that cannot be loaded is logged; the server starts without one.
    pub fn restore(&self) -> Result<(), HubError> {
        match self.reg.active_model()? {
            Some(m) => {
                if let Err(e) = self.activate(&m.id) {
                    tracing::error!(model = %m.id, "the active model could not be loaded: {e}");
                }
            }
            None => tracing::info!(
                "no model yet: predictions answer 503 until one is trained or activated"
            ),
        }
        Ok(())
    }

    /// Model `id`, loaded (the active one is shared, not loaded again).
    pub fn load(&self, id: &str) -> Result<Arc<Model>, HubError> {
        let row = self
            .reg
            .model(id)?
            .ok_or_else(|| HubError::UnknownModel(id.to_string()))?;
        if let Some(a) = self.active().filter(|a| a.id == id) {
            return Ok(a);
        }
        let model = Model::load(&row.dir, &self.device).map_err(|e| HubError::Load {
            id: id.to_string(),
            source: Box::new(e),
        })?;
        Ok(Arc::new(model.with_id(id)))
    }

    /// Loads then swaps: requests in flight finish on the previous model.
    pub fn activate(&self, id: &str) -> Result<Arc<Model>, HubError> {
        let _g = self.activating.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = self.load(id)?;
        self.reg.set_active(id)?;
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&loaded));
        tracing::info!(model = id, "model activated");
        Ok(loaded)
    }

    /// Activates `id` only when no model is active. Answers whether it did.
    pub fn activate_if_none(&self, id: &str) -> Result<bool, HubError> {
        {
            let _g = self.activating.lock().unwrap_or_else(|p| p.into_inner());
            if self.active().is_some() {
                return Ok(false);
            }
        }
        self.activate(id).map(|_| true)
    }
}
