package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// input is one file (or standard input) holding one or more YAML documents.
type input struct {
	name string // shown in messages
	dir  string // for a Kustomization's relative resources; "" for stdin
	data []byte
}

// result is what validate found.
type result struct {
	problems []string
	objects  int
}

// kustomization holds the fields of kustomize.config.k8s.io/v1beta1
// Kustomization that this repository uses. Decoded strictly, so any other
// field is reported: add it here when the example starts using it. The run
// script also renders the directory with `kubectl kustomize`, which checks
// the file against kustomize's own, complete type.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

type located[T any] struct {
	where string // "file[doc] Kind/name"
	dir   string
	obj   T
}

type checker struct {
	problems       []string
	objects        int
	undecoded      int // documents that failed to decode: skip "not found" references
	deployments    []located[*appsv1.Deployment]
	configMaps     []located[*corev1.ConfigMap]
	services       []located[*corev1.Service]
	kustomizations []located[*kustomization]
}

func (ck *checker) errorf(where, format string, args ...any) {
	ck.problems = append(ck.problems, where+": "+fmt.Sprintf(format, args...))
}

// fieldErrors reports apimachinery's validation errors, if any.
func (ck *checker) fieldErrors(where string, errs field.ErrorList) {
	for _, e := range errs {
		ck.errorf(where, "%s", e.Error())
	}
}

// validate decodes every document of every input, then checks each object
// and the references between them.
func validate(inputs []input) result {
	ck := &checker{}
	for _, in := range inputs {
		ck.decodeInput(in)
	}
	for _, d := range ck.deployments {
		ck.checkDeployment(d)
	}
	for _, c := range ck.configMaps {
		ck.checkConfigMap(c)
	}
	for _, s := range ck.services {
		ck.checkService(s)
	}
	for _, k := range ck.kustomizations {
		ck.checkKustomization(k)
	}
	if ck.objects == 0 {
		ck.problems = append(ck.problems, "no Kubernetes object found in the input")
	}
	return result{problems: ck.problems, objects: ck.objects}
}

func (ck *checker) decodeInput(in input) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in.data)))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		where := fmt.Sprintf("%s[%d]", in.name, n)
		if err != nil {
			ck.errorf(where, "split YAML documents: %v", err)
			return
		}
		var v interface{}
		if err := yaml.Unmarshal(doc, &v); err != nil {
			ck.errorf(where, "YAML: %v", err)
			continue
		}
		if v == nil {
			continue // only comments, or an empty document between two ---
		}
		ck.decodeDocument(where, in.dir, doc)
	}
}

// decodeDocument strictly decodes one document into the type its
// apiVersion and kind name.
func (ck *checker) decodeDocument(where, dir string, doc []byte) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		ck.errorf(where, "apiVersion/kind: %v", err)
		return
	}
	gvk := tm.APIVersion + " " + tm.Kind
	// Decode as the API server does with kubectl's request: YAML to JSON
	// without looking at the target type (so `value: 20` for a string field
	// is the error kubectl would get), then strict, case-sensitive JSON:
	// unknown fields, duplicate keys and wrong types are all reported, each
	// with its full path. sigs.k8s.io/yaml's UnmarshalStrict is close, but
	// converts by target type and matches field names case-insensitively.
	strict := func(obj interface{}) bool {
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			ck.errorf(where, "%s: %v", gvk, err)
			ck.undecoded++
			return false
		}
		strictErrs, err := kjson.UnmarshalStrict(j, obj)
		if err != nil {
			ck.errorf(where, "%s: %v", gvk, err)
			ck.undecoded++
			return false
		}
		// Unknown or duplicate fields are reported, but the object did
		// decode: check it too.
		for _, e := range strictErrs {
			ck.errorf(where, "%s: %v", gvk, e)
		}
		ck.objects++
		return true
	}
	switch gvk {
	case "apps/v1 Deployment":
		var d appsv1.Deployment
		if strict(&d) {
			ck.deployments = append(ck.deployments, located[*appsv1.Deployment]{where + " Deployment/" + d.Name, dir, &d})
		}
	case "v1 ConfigMap":
		var c corev1.ConfigMap
		if strict(&c) {
			ck.configMaps = append(ck.configMaps, located[*corev1.ConfigMap]{where + " ConfigMap/" + c.Name, dir, &c})
		}
	case "v1 Service":
		var s corev1.Service
		if strict(&s) {
			ck.services = append(ck.services, located[*corev1.Service]{where + " Service/" + s.Name, dir, &s})
		}
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		var k kustomization
		if strict(&k) {
			ck.kustomizations = append(ck.kustomizations, located[*kustomization]{where + " Kustomization", dir, &k})
		}
	default:
		ck.undecoded++
		ck.errorf(where, "unsupported apiVersion/kind %q: this checker knows apps/v1 Deployment, v1 ConfigMap, v1 Service and kustomize.config.k8s.io/v1beta1 Kustomization", gvk)
	}
}

func (ck *checker) checkMeta(where string, m *metav1.ObjectMeta, nameFn apivalidation.ValidateNameFunc) {
	ck.fieldErrors(where, apivalidation.ValidateObjectMeta(m, false, nameFn, field.NewPath("metadata")))
}

func (ck *checker) checkDeployment(l located[*appsv1.Deployment]) {
	d, where := l.obj, l.where
	ck.checkMeta(where, &d.ObjectMeta, apivalidation.NameIsDNSSubdomain)
	spec := &d.Spec
	if spec.Replicas != nil && *spec.Replicas < 0 {
		ck.errorf(where, "spec.replicas is negative")
	}
	tmplLabels := labels.Set(spec.Template.Labels)
	// A pod template has no name: check only its labels and annotations.
	tp := field.NewPath("spec", "template", "metadata")
	ck.fieldErrors(where, metav1validation.ValidateLabels(spec.Template.Labels, tp.Child("labels")))
	ck.fieldErrors(where, apivalidation.ValidateAnnotations(spec.Template.Annotations, tp.Child("annotations")))
	switch {
	case spec.Selector == nil || (len(spec.Selector.MatchLabels) == 0 && len(spec.Selector.MatchExpressions) == 0):
		ck.errorf(where, "spec.selector is required and must not be empty")
	default:
		sel, err := metav1.LabelSelectorAsSelector(spec.Selector)
		if err != nil {
			ck.errorf(where, "spec.selector: %v", err)
		} else if !sel.Matches(tmplLabels) {
			ck.errorf(where, "spec.selector %s does not match the pod template's labels %v", sel, tmplLabels)
		}
	}

	pod := &spec.Template.Spec
	if len(pod.Containers) == 0 {
		ck.errorf(where, "spec.template.spec.containers is empty")
	}
	volumes := map[string]*corev1.Volume{}
	for i := range pod.Volumes {
		v := &pod.Volumes[i]
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			ck.errorf(where, "volume %q: %s", v.Name, msg)
		}
		if volumes[v.Name] != nil {
			ck.errorf(where, "volume %q is declared twice", v.Name)
		}
		volumes[v.Name] = v
		if cm := v.ConfigMap; cm != nil && !(cm.Optional != nil && *cm.Optional) {
			if ck.configMap(cm.Name) == nil && ck.undecoded == 0 {
				ck.errorf(where, "volume %q references ConfigMap %q, which is not defined in the given files", v.Name, cm.Name)
			}
		}
	}
	names := map[string]bool{}
	for i := range pod.Containers {
		c := &pod.Containers[i]
		cwhere := fmt.Sprintf("%s container %q", where, c.Name)
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			ck.errorf(cwhere, "name: %s", msg)
		}
		if names[c.Name] {
			ck.errorf(cwhere, "container name used twice")
		}
		names[c.Name] = true
		ck.checkContainer(cwhere, c, volumes)
		if isBaton(c) {
			ck.checkBaton(cwhere, pod, c)
		}
	}
}

func (ck *checker) checkContainer(where string, c *corev1.Container, volumes map[string]*corev1.Volume) {
	if strings.TrimSpace(c.Image) == "" {
		ck.errorf(where, "image is required")
	}
	portNames := map[string]bool{}
	portNums := map[string]bool{}
	for _, p := range c.Ports {
		if p.Name != "" {
			for _, msg := range validation.IsValidPortName(p.Name) {
				ck.errorf(where, "port name %q: %s", p.Name, msg)
			}
			if portNames[p.Name] {
				ck.errorf(where, "port name %q used twice", p.Name)
			}
			portNames[p.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(p.ContainerPort)) {
			ck.errorf(where, "containerPort %d: %s", p.ContainerPort, msg)
		}
		switch p.Protocol {
		case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			ck.errorf(where, "port %d: protocol %q is not TCP, UDP or SCTP", p.ContainerPort, p.Protocol)
		}
		key := fmt.Sprintf("%d/%s", p.ContainerPort, protocolOf(p))
		if portNums[key] {
			ck.errorf(where, "containerPort %s declared twice", key)
		}
		portNums[key] = true
	}
	envNames := map[string]bool{}
	for _, e := range c.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			ck.errorf(where, "env %q: %s", e.Name, msg)
		}
		if envNames[e.Name] {
			// The API server accepts this; the last one silently wins.
			ck.errorf(where, "env %q is set twice", e.Name)
		}
		envNames[e.Name] = true
	}
	ck.checkProbe(where, "readinessProbe", c, c.ReadinessProbe)
	ck.checkProbe(where, "livenessProbe", c, c.LivenessProbe)
	ck.checkProbe(where, "startupProbe", c, c.StartupProbe)
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if volumes[m.Name] == nil {
			ck.errorf(where, "volumeMount %q references no volume of the pod", m.Name)
		}
		if !filepath.IsAbs(m.MountPath) {
			ck.errorf(where, "volumeMount %q: mountPath %q is not absolute", m.Name, m.MountPath)
		}
		if mounts[m.MountPath] {
			ck.errorf(where, "mountPath %q used twice", m.MountPath)
		}
		mounts[m.MountPath] = true
	}
}

func protocolOf(p corev1.ContainerPort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// containerPort finds the container's declared port that p names (by name
// or number). Kubernetes allows probing an undeclared port number; this
// checker does not, so that a typo in either place is caught.
func containerPort(c *corev1.Container, p intstr.IntOrString) *corev1.ContainerPort {
	for i := range c.Ports {
		cp := &c.Ports[i]
		if p.Type == intstr.String && p.StrVal != "" && cp.Name == p.StrVal {
			return cp
		}
		if p.Type == intstr.Int && p.IntVal != 0 && cp.ContainerPort == p.IntVal {
			return cp
		}
	}
	return nil
}

func (ck *checker) checkProbe(where, name string, c *corev1.Container, p *corev1.Probe) {
	if p == nil {
		return
	}
	h := &p.ProbeHandler
	n := 0
	for _, set := range []bool{h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.GRPC != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		ck.errorf(where, "%s must have exactly one of exec, httpGet, tcpSocket, grpc (has %d)", name, n)
	}
	switch {
	case h.HTTPGet != nil:
		if !strings.HasPrefix(h.HTTPGet.Path, "/") {
			ck.errorf(where, "%s.httpGet.path %q does not start with /", name, h.HTTPGet.Path)
		}
		if containerPort(c, h.HTTPGet.Port) == nil {
			ck.errorf(where, "%s.httpGet.port %s is not a declared container port", name, h.HTTPGet.Port.String())
		}
	case h.TCPSocket != nil:
		if containerPort(c, h.TCPSocket.Port) == nil {
			ck.errorf(where, "%s.tcpSocket.port %s is not a declared container port", name, h.TCPSocket.Port.String())
		}
	case h.GRPC != nil:
		if containerPort(c, intstr.FromInt32(h.GRPC.Port)) == nil {
			ck.errorf(where, "%s.grpc.port %d is not a declared container port", name, h.GRPC.Port)
		}
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			ck.errorf(where, "%s.exec.command is empty", name)
		}
	}
	if p.PeriodSeconds < 0 || p.TimeoutSeconds < 0 || p.FailureThreshold < 0 || p.SuccessThreshold < 0 || p.InitialDelaySeconds < 0 {
		ck.errorf(where, "%s has a negative setting", name)
	}
	if name != "readinessProbe" && p.SuccessThreshold > 1 {
		ck.errorf(where, "%s.successThreshold must be 1", name)
	}
}

func (ck *checker) configMap(name string) *corev1.ConfigMap {
	for _, c := range ck.configMaps {
		if c.obj.Name == name {
			return c.obj
		}
	}
	return nil
}

func (ck *checker) checkConfigMap(l located[*corev1.ConfigMap]) {
	c, where := l.obj, l.where
	ck.checkMeta(where, &c.ObjectMeta, apivalidation.NameIsDNSSubdomain)
	for k := range c.Data {
		for _, msg := range validation.IsConfigMapKey(k) {
			ck.errorf(where, "data key %q: %s", k, msg)
		}
		if _, dup := c.BinaryData[k]; dup {
			ck.errorf(where, "key %q is in both data and binaryData", k)
		}
	}
	for k := range c.BinaryData {
		for _, msg := range validation.IsConfigMapKey(k) {
			ck.errorf(where, "binaryData key %q: %s", k, msg)
		}
	}
}

func (ck *checker) checkService(l located[*corev1.Service]) {
	s, where := l.obj, l.where
	ck.checkMeta(where, &s.ObjectMeta, apivalidation.NameIsDNS1035Label)
	if len(s.Spec.Selector) == 0 {
		ck.errorf(where, "spec.selector is empty: the Service would select no pods of these manifests")
		return
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var pods []*corev1.PodSpec
	for _, d := range ck.deployments {
		if sel.Matches(labels.Set(d.obj.Spec.Template.Labels)) {
			pods = append(pods, &d.obj.Spec.Template.Spec)
		}
	}
	if len(pods) == 0 {
		if ck.undecoded > 0 {
			return // the Deployment may be the one that failed to decode
		}
		ck.errorf(where, "spec.selector %s matches the pods of no Deployment in the given files", sel)
		return
	}
	if len(s.Spec.Ports) == 0 {
		ck.errorf(where, "spec.ports is empty")
	}
	seen := map[string]bool{}
	for _, p := range s.Spec.Ports {
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			ck.errorf(where, "port %d needs a name (the Service has several ports)", p.Port)
		}
		if p.Name != "" {
			for _, msg := range validation.IsDNS1123Label(p.Name) {
				ck.errorf(where, "port name %q: %s", p.Name, msg)
			}
			if seen[p.Name] {
				ck.errorf(where, "port name %q used twice", p.Name)
			}
			seen[p.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			ck.errorf(where, "port %d: %s", p.Port, msg)
		}
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port) // the API server's default
		}
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		for _, pod := range pods {
			found := false
			for i := range pod.Containers {
				if cp := containerPort(&pod.Containers[i], target); cp != nil && protocolOf(*cp) == proto {
					found = true
				}
			}
			if !found {
				ck.errorf(where, "port %q: targetPort %s/%s is not a declared container port of the selected pods", p.Name, target.String(), proto)
			}
		}
	}
}

func (ck *checker) checkKustomization(l located[*kustomization]) {
	k, where := l.obj, l.where
	if len(k.Resources) == 0 {
		ck.errorf(where, "resources is empty")
	}
	if l.dir == "" {
		return // read from standard input: nothing to resolve paths against
	}
	for _, r := range k.Resources {
		if strings.Contains(r, "://") {
			ck.errorf(where, "resource %q is remote: the example must build offline", r)
			continue
		}
		if _, err := os.Stat(filepath.Join(l.dir, r)); err != nil {
			ck.errorf(where, "resource %q: %v", r, err)
		}
	}
}
