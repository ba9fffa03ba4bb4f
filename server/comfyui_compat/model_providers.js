// Served as an extension only when the server serves a ComfyUI editor (--frontend comfyui or
// --front-end-root). Older ComfyUI editors (1.2x) register a fixed list of model-loader node types
// (ImageOnlyCheckpointLoader, ControlNetLoader, UpscaleModelLoader, StyleModelLoader, GLIGENLoader, ...)
// as "model providers" without checking that the server has them; when one is missing, every model
// dropdown fails to build. This keeps only the providers whose node type the server does have, which is
// what newer editors do themselves. It changes nothing when no provider is missing.

const STORE_ID = "modelToNode";

function known(provider) {
  return Boolean(provider && provider.nodeDef && provider.nodeDef.name);
}

function patch(store) {
  if (!store || store.__sumiePatched || typeof store.getRegisteredNodeTypes !== "function") return;
  const registerDefaults = store.registerDefaults;
  const providers = () => {
    if (typeof registerDefaults === "function") registerDefaults();
    return Object.values(store.modelToNodeMap || {}).flat().filter(known);
  };
  store.getRegisteredNodeTypes = () => new Set(providers().map((p) => p.nodeDef.name));
  if (typeof store.getNodeProvider === "function") {
    store.getNodeProvider = (modelType) => {
      if (typeof registerDefaults === "function") registerDefaults();
      return (store.modelToNodeMap?.[modelType] || []).find(known);
    };
  }
  if (typeof store.getAllNodeProviders === "function") {
    store.getAllNodeProviders = (modelType) => {
      if (typeof registerDefaults === "function") registerDefaults();
      return (store.modelToNodeMap?.[modelType] || []).filter(known);
    };
  }
  store.__sumiePatched = true;
}

const pinia = document.getElementById("vue-app")?.__vue_app__?.config?.globalProperties?.$pinia;
if (pinia) {
  patch(pinia._s?.get(STORE_ID));  // the store may exist already
  pinia.use(({ store }) => {  // or be created later
    if (store.$id === STORE_ID) patch(store);
  });
}
