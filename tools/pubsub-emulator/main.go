// Command pubsub-emulator serves Google's Go fake of Pub/Sub (cloud.google.com/go/pubsub/pstest)
// on a fixed loopback address, for Gatehouse's tests. Built offline from Debian packages, see
// build.sh.
//
// gRPC (Publisher and Subscriber services) listens on -addr. Topics and subscriptions are
// pre-created from -topics and -subscriptions, and a tiny HTTP admin endpoint on -admin-addr
// creates more with the same paths and bodies as Pub/Sub's REST API, so each test can use fresh
// names:
//
//	PUT /v1/projects/P/topics/T
//	PUT /v1/projects/P/subscriptions/S   {"topic": "projects/P/topics/T", "ackDeadlineSeconds": 10}
//	GET /healthz
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"
	"strings"

	"cloud.google.com/go/pubsub/pstest"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8085", "gRPC listen address")
	adminAddr := flag.String("admin-addr", "127.0.0.1:8086", "HTTP admin listen address (empty = none)")
	topics := flag.String("topics", "", "comma-separated full topic names to create")
	subs := flag.String("subscriptions", "", "comma-separated SUB=TOPIC pairs (full names) to create")
	flag.Parse()

	// NewServer also listens on a random loopback port of its own; we serve its GServer on ours.
	fake := pstest.NewServer()
	g := &fake.GServer
	ctx := context.Background()
	for _, t := range split(*topics) {
		if err := createTopic(ctx, g, t); err != nil {
			log.Fatalf("create topic %s: %v", t, err)
		}
	}
	for _, pair := range split(*subs) {
		parts := strings.SplitN(pair, "=", 2)
		if len(parts) != 2 {
			log.Fatalf("subscription %q is not SUB=TOPIC", pair)
		}
		if err := createSubscription(ctx, g, parts[0], parts[1], 10); err != nil {
			log.Fatalf("create subscription %s: %v", parts[0], err)
		}
	}

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	srv := grpc.NewServer()
	pb.RegisterPublisherServer(srv, g)
	pb.RegisterSubscriberServer(srv, g)

	if *adminAddr != "" {
		go serveAdmin(*adminAddr, g)
	}
	log.Printf("pubsub emulator (pstest) on %s, admin on %s", *addr, *adminAddr)
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func createTopic(ctx context.Context, g *pstest.GServer, name string) error {
	_, err := g.CreateTopic(ctx, &pb.Topic{Name: name})
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return err
}

func createSubscription(ctx context.Context, g *pstest.GServer, name, topic string, ackSecs int32) error {
	_, err := g.CreateSubscription(ctx, &pb.Subscription{Name: name, Topic: topic, AckDeadlineSeconds: ackSecs})
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return err
}

func serveAdmin(addr string, g *pstest.GServer) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			http.Error(w, "use PUT", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/v1/")
		var err error
		switch {
		case strings.Contains(name, "/topics/"):
			err = createTopic(r.Context(), g, name)
		case strings.Contains(name, "/subscriptions/"):
			var body struct {
				Topic              string `json:"topic"`
				AckDeadlineSeconds int32  `json:"ackDeadlineSeconds"`
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				http.Error(w, "bad json: "+err.Error(), http.StatusBadRequest)
				return
			}
			if body.AckDeadlineSeconds == 0 {
				body.AckDeadlineSeconds = 10
			}
			err = createSubscription(r.Context(), g, name, body.Topic, body.AckDeadlineSeconds)
		default:
			http.Error(w, "unknown resource", http.StatusNotFound)
			return
		}
		if err != nil {
			code := http.StatusBadRequest
			if status.Code(err) == codes.NotFound {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("content-type", "application/json")
		w.Write([]byte(`{"name":"` + name + `"}`))
	})
	log.Fatal(http.ListenAndServe(addr, mux))
}
