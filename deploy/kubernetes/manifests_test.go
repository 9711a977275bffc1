package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	infv1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	eppconfig "sigs.k8s.io/gateway-api-inference-extension/apix/config/v1alpha1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// manifestDir holds every object `kubectl apply -f` creates.
const manifestDir = "manifests"

// scheme knows the kinds the manifests may hold, each from its project's
// own Go types. A kind missing here is a decoding failure, not a skip.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		autoscalingv2.AddToScheme, rbacv1.AddToScheme,
		infv1.Install, eppconfig.Install, gatewayv1.Install, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictDecoder decodes YAML or JSON as the API server does in strict
// field validation: unknown fields, duplicate fields and unregistered kinds
// are errors.
var strictDecoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// object is one document of a manifest file, decoded.
type object struct {
	File string // base name
	Doc  int    // 0-based document index in the file
	GVK  schema.GroupVersionKind
	Obj  runtime.Object
}

func (o object) String() string {
	return fmt.Sprintf("%s#%d (%s %s)", o.File, o.Doc, o.GVK.Kind, o.name())
}

func (o object) name() string {
	m, err := meta.Accessor(o.Obj)
	if err != nil {
		return "?"
	}
	return m.GetName()
}

func (o object) namespace() string {
	m, err := meta.Accessor(o.Obj)
	if err != nil {
		return ""
	}
	return m.GetNamespace()
}

// splitDocuments returns the YAML documents of data that hold something
// other than comments.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if hasContent(doc) {
			docs = append(docs, doc)
		}
	}
}

func hasContent(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return true
		}
	}
	return false
}

// decodeFile strictly decodes every document of one manifest file.
func decodeFile(path string) ([]object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var objs []object
	for i, doc := range docs {
		obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s, document %d: %w", filepath.Base(path), i, err)
		}
		objs = append(objs, object{File: filepath.Base(path), Doc: i, GVK: *gvk, Obj: obj})
	}
	return objs, nil
}

// loadManifests decodes every .yaml file in manifestDir; any failure
// fails the test.
func loadManifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", manifestDir)
	}
	sort.Strings(files)
	var all []object
	for _, f := range files {
		objs, err := decodeFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, objs...)
	}
	return all
}

// find returns the one object of type T named name.
func find[T runtime.Object](t *testing.T, objs []object, name string) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.Obj.(T); ok && o.name() == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T named %q in the manifests, found %d", zero, name, len(found))
	}
	return found[0]
}

// all returns every object of type T.
func all[T runtime.Object](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// otherObjects are Kubernetes objects outside manifestDir, applied
// separately; they are decoded as strictly.
var otherObjects = []string{"prometheus-adapter/configmap.yaml"}

func TestEveryManifestDecodesStrictlyIntoTheOfficialTypes(t *testing.T) {
	objs := loadManifests(t)
	for _, f := range otherObjects {
		more, err := decodeFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, more...)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GVK.Kind]++
		t.Logf("%s", o)
	}
	// The walk-through applies these; each must be present.
	for _, k := range []string{"Namespace", "ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "Service",
		"HorizontalPodAutoscaler", "PodMonitor", "InferencePool", "ServiceAccount", "Role", "RoleBinding",
		"ClusterRole", "ClusterRoleBinding", "Gateway", "HTTPRoute"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in %s", k, manifestDir)
		}
	}
}

// The decoder must refuse what the API server's strict field validation
// refuses, or the test above proves nothing.
func TestStrictDecoderRefusesUnknownFieldsDuplicatesAndKinds(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"unknown field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 1\n"},
		{"field in the wrong case", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  Ports: []\n"},
		{"duplicate field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n"},
		{"unknown kind", "apiVersion: v1\nkind: Podd\nmetadata: {name: x}\n"},
		{"unknown group", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n"},
		{"unknown InferencePool field", "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {name: x}\nspec:\n  targetPort: 8000\n"},
	} {
		if _, _, err := strictDecoder.Decode([]byte(tc.doc), nil, nil); err == nil {
			t.Errorf("%s: decoded without error:\n%s", tc.name, tc.doc)
		}
	}
}

func TestNamespacedObjectsShareOneNamespace(t *testing.T) {
	objs := loadManifests(t)
	nss := all[*corev1.Namespace](objs)
	if len(nss) != 1 {
		t.Fatalf("want one Namespace object, got %d", len(nss))
	}
	want := nss[0].Name
	for _, o := range objs {
		scoped, err := isNamespaced(o.GVK)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case scoped && o.namespace() != want:
			t.Errorf("%s: namespace %q, want %q", o, o.namespace(), want)
		case !scoped && o.namespace() != "":
			t.Errorf("%s: cluster-scoped kind with namespace %q", o, o.namespace())
		}
	}
}

func isNamespaced(gvk schema.GroupVersionKind) (bool, error) {
	switch gvk.Kind {
	case "Namespace", "ClusterRole", "ClusterRoleBinding":
		return false, nil
	case "ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "Service", "HorizontalPodAutoscaler",
		"PodMonitor", "InferencePool", "ServiceAccount", "Role", "RoleBinding", "Gateway", "HTTPRoute":
		return true, nil
	}
	return false, fmt.Errorf("scope of %s unknown to this test: add it", gvk.Kind)
}
