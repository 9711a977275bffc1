package kubernetes

// Custom resources checked as the API server checks them on create, with
// the API server's own CRD code (k8s.io/apiextensions-apiserver) and the
// CRDs shipped in the pinned modules: unknown fields against the CRD's
// schema (pruning), defaulting, OpenAPI validation and the CEL rules
// (x-kubernetes-validations).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apivalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// crdSources are the CRDs of the custom kinds in the manifests, by module
// and path inside it, at the versions go.mod pins. (The Prometheus
// Operator's API module ships no CRDs: PodMonitor is checked only against
// its Go types.)
var crdSources = []struct{ module, path string }{
	{"sigs.k8s.io/gateway-api-inference-extension", "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml"},
	{"sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_gateways.yaml"},
	{"sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"},
}

// crdSchema is one served version of a CRD, ready to validate with.
type crdSchema struct {
	structural *structuralschema.Structural
	validator  apivalidation.SchemaValidator
	cel        *cel.Validator
}

var loadCRDs = sync.OnceValues(func() (map[schema.GroupVersionKind]*crdSchema, error) {
	s := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := apiextensions.AddToScheme(s); err != nil {
		return nil, err
	}
	dec := serializer.NewCodecFactory(s).UniversalDeserializer()
	out := map[schema.GroupVersionKind]*crdSchema{}
	for _, src := range crdSources {
		dir, err := moduleDir(src.module)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(dir, src.path))
		if err != nil {
			return nil, err
		}
		obj, _, err := dec.Decode(data, nil, nil)
		if err != nil {
			return nil, err
		}
		v1crd, ok := obj.(*apiextensionsv1.CustomResourceDefinition)
		if !ok {
			return nil, &os.PathError{Op: "decode", Path: src.path, Err: os.ErrInvalid}
		}
		var crd apiextensions.CustomResourceDefinition
		if err := s.Convert(v1crd, &crd, nil); err != nil {
			return nil, err
		}
		for _, v := range crd.Spec.Versions {
			// The internal form keeps a schema shared by every version at
			// the top; this finds it either way.
			val, err := apiextensions.GetSchemaForVersion(&crd, v.Name)
			if err != nil {
				return nil, err
			}
			if !v.Served || val == nil || val.OpenAPIV3Schema == nil {
				continue
			}
			props := val.OpenAPIV3Schema
			st, err := structuralschema.NewStructural(props)
			if err != nil {
				return nil, err
			}
			sv, _, err := apivalidation.NewSchemaValidator(props)
			if err != nil {
				return nil, err
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
			out[gvk] = &crdSchema{structural: st, validator: sv, cel: cel.NewValidator(st, true, celconfig.PerCallLimit)}
		}
	}
	return out, nil
})

// moduleDir is where the go command keeps a module of go.mod's build list.
func moduleDir(module string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// validateCustomResource returns what the API server would refuse in doc
// (one YAML document) on create.
func validateCustomResource(t *testing.T, c *crdSchema, doc []byte) field.ErrorList {
	t.Helper()
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	// Numbers as the API server decodes them: int64 where integral.
	var obj map[string]any
	if err := utiljson.Unmarshal(j, &obj); err != nil {
		t.Fatal(err)
	}
	var errs field.ErrorList
	for _, p := range pruning.PruneWithOptions(obj, c.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}) {
		errs = append(errs, field.Invalid(field.NewPath(p), nil, "unknown field (the CRD's schema prunes it)"))
	}
	structuraldefaulting.Default(obj, c.structural)
	errs = append(errs, apivalidation.ValidateCustomResource(nil, obj, c.validator)...)
	celErrs, _ := c.cel.Validate(context.Background(), nil, c.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

// customDocs returns the manifests' documents whose kind has a CRD here.
func customDocs(t *testing.T) map[string][]byte {
	t.Helper()
	crds, err := loadCRDs()
	if err != nil {
		t.Fatalf("loading CRDs: %v", err)
	}
	docs := map[string][]byte{}
	files, _ := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		split, err := splitDocuments(data)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range split {
			_, gvk, err := strictDecoder.Decode(d, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := crds[*gvk]; ok {
				docs[fmt.Sprintf("%s#%d", filepath.Base(f), i)] = d
			}
		}
	}
	return docs
}

func TestCustomResourcesPassTheirCRDsSchemaAndCELRules(t *testing.T) {
	crds, err := loadCRDs()
	if err != nil {
		t.Fatalf("loading CRDs: %v", err)
	}
	docs := customDocs(t)
	seen := map[string]bool{}
	for where, d := range docs {
		_, gvk, _ := strictDecoder.Decode(d, nil, nil)
		seen[gvk.Kind] = true
		for _, e := range validateCustomResource(t, crds[*gvk], d) {
			t.Errorf("%s (%s): %v", where, gvk.Kind, e)
		}
	}
	for _, k := range []string{"InferencePool", "Gateway", "HTTPRoute"} {
		if !seen[k] {
			t.Errorf("no %s checked against its CRD", k)
		}
	}
}

// The validation above must refuse what the API server refuses, CEL rules
// included, or it proves nothing.
func TestCRDValidationRefusesBrokenPoolsAndRoutes(t *testing.T) {
	crds, err := loadCRDs()
	if err != nil {
		t.Fatalf("loading CRDs: %v", err)
	}
	pool := crds[schema.GroupVersionKind{Group: "inference.networking.k8s.io", Version: "v1", Kind: "InferencePool"}]
	route := crds[schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"}]
	if pool == nil || route == nil {
		t.Fatal("InferencePool v1 or HTTPRoute v1 CRD missing")
	}
	for _, tc := range []struct {
		name string
		crd  *crdSchema
		want string // in the refusal
		doc  string
	}{
		{"repeated target port (a CEL rule)", pool, "port number must be unique", `
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p}
spec:
  selector: {matchLabels: {app: x}}
  targetPorts: [{number: 8000}, {number: 8000}]
  endpointPickerRef: {name: epp, port: {number: 9002}}
`},
		{"Service endpoint picker without a port (a CEL rule)", pool, "port is required", `
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p}
spec:
  selector: {matchLabels: {app: x}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: epp}
`},
		{"no target ports (schema)", pool, "at least 1 items", `
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p}
spec:
  selector: {matchLabels: {app: x}}
  targetPorts: []
  endpointPickerRef: {name: epp, port: {number: 9002}}
`},
		{"unknown field (pruned)", pool, "spec.endpointPickerRef.failure", `
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p}
spec:
  selector: {matchLabels: {app: x}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: epp, port: {number: 9002}, failure: FailOpen}
`},
		{"path match not starting with / (a CEL rule)", route, "must be an absolute path", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  rules:
    - matches: [{path: {type: PathPrefix, value: v1}}]
`},
	} {
		errs := validateCustomResource(t, tc.crd, []byte(tc.doc))
		switch {
		case len(errs) == 0:
			t.Errorf("%s: accepted", tc.name)
		case len(errs) > 1 || !strings.Contains(errs.ToAggregate().Error(), tc.want):
			t.Errorf("%s: refused with %v, want only %q", tc.name, errs.ToAggregate(), tc.want)
		default:
			t.Logf("%s: refused: %v", tc.name, errs.ToAggregate())
		}
	}
}
