// Validates the custom resources a chart renders (Gateway API HTTPRoute,
// the Prometheus Operator's ServiceMonitor), which kubernetes-validate has
// no schema for, against the schemas of the npm packages
// @kubernetes-models/gateway-api and @kubernetes-models/prometheus-operator
// (versions pinned in deploy/helm/tests/crd/package-lock.json). Those
// packages ship ajv validators compiled from the upstream API types with
// their kubebuilder validation markers (types, enums, patterns, lengths,
// required fields); CEL rules (x-kubernetes-validations) are not in them.
//
//     node crd_validate.mjs NODE_MODULES OBJECTS.json
//
// OBJECTS.json is a JSON array of objects (known_kinds.py writes it). Each
// object is reported on one line; the exit status is 1 when any object
// fails, including an object of a kind with no schema here: nothing is
// skipped.
//
// Unknown fields: the compiled validators accept fields their schema does
// not declare (no additionalProperties: false in them), while the API
// server drops or refuses them. So every object handed to a validator is a
// proxy that records which fields the validator looked up: a field present
// in an object whose schema looked up other fields (its declared
// properties) but never this one is reported as unknown. An object whose
// keys the validator enumerates (a map: labels, matchLabels) or that it
// never looks into (free-form, x-kubernetes-preserve-unknown-fields) is not
// checked for unknown fields.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// apiVersion/kind -> [npm package, its compiled schema module].
const SCHEMAS = {
  "gateway.networking.k8s.io/v1/HTTPRoute": [
    "@kubernetes-models/gateway-api",
    "_schemas/IoK8sSigsGatewayApiApisV1HTTPRoute.js",
  ],
  "monitoring.coreos.com/v1/ServiceMonitor": [
    "@kubernetes-models/prometheus-operator",
    "_schemas/ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor.js",
  ],
};

// Wraps value (recursively) so lookups of its fields are recorded in seen.
function track(value, path, seen) {
  if (Array.isArray(value)) {
    return value.map((v, i) => track(v, `${path}/${i}`, seen));
  }
  if (value === null || typeof value !== "object") {
    return value;
  }
  const entry = { path, keys: Object.keys(value), looked: new Set(), enumerated: false };
  seen.push(entry);
  const target = {};
  for (const key of entry.keys) {
    target[key] = track(value[key], `${path}/${key}`, seen);
  }
  const note = (key) => {
    if (typeof key === "string") entry.looked.add(key);
  };
  return new Proxy(target, {
    get(t, key, receiver) {
      note(key);
      return Reflect.get(t, key, receiver);
    },
    has(t, key) {
      note(key);
      return Reflect.has(t, key);
    },
    getOwnPropertyDescriptor(t, key) {
      note(key);
      return Reflect.getOwnPropertyDescriptor(t, key);
    },
    ownKeys(t) {
      entry.enumerated = true;
      return Reflect.ownKeys(t);
    },
  });
}

function unknownFields(seen) {
  const unknown = [];
  for (const entry of seen) {
    if (entry.enumerated || entry.looked.size === 0) continue;
    for (const key of entry.keys) {
      if (!entry.looked.has(key)) unknown.push(`${entry.path}/${key}`);
    }
  }
  return unknown;
}

async function main() {
  const [modules, objectsFile] = process.argv.slice(2);
  if (!modules || !objectsFile) {
    console.error("usage: crd_validate.mjs NODE_MODULES OBJECTS.json");
    process.exit(2);
  }
  const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
  // The compiled validators leave messages out; ajv-i18n (a dependency of
  // @kubernetes-models/validate) writes them, as the models' validate() does.
  const localize = (await import(pathToFileURL(join(modules, "ajv-i18n/localize/en/index.js")).href)).default;
  const versions = {};
  let failed = 0;
  for (const obj of objects) {
    const kind = `${obj.apiVersion}/${obj.kind}`;
    const name = `${obj.kind}/${obj.metadata?.name ?? "?"} (${obj.apiVersion})`;
    const schema = SCHEMAS[kind];
    if (!schema) {
      console.log(`FAIL ${name}: no schema for this kind in crd_validate.mjs`);
      failed++;
      continue;
    }
    const [pkg, file] = schema;
    if (!versions[pkg]) {
      versions[pkg] = JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
    }
    const { validate } = await import(pathToFileURL(join(modules, pkg, file)).href);
    const seen = [];
    const valid = validate(track(obj, "", seen));
    const errors = [];
    if (!valid) {
      localize(validate.errors);
      for (const e of validate.errors) errors.push(`${e.instancePath || "/"} ${e.message}`);
    }
    for (const path of unknownFields(seen)) {
      errors.push(`${path} is an unknown field`);
    }
    const against = `${pkg}@${versions[pkg]}`;
    if (errors.length === 0) {
      console.log(`ok ${name} [${against}]`);
    } else {
      failed++;
      for (const e of [...new Set(errors)]) {
        console.log(`FAIL ${name}: ${e} [${against}]`);
      }
    }
  }
  console.log(`CRD schemas: ${objects.length - failed} of ${objects.length} objects valid`);
  process.exit(failed > 0 ? 1 : 0);
}

await main();
