
/*
 * Foko chat: blocking work on an nginx thread pool.
 *
 * A task is allocated on the heap with its inputs copied in, so that it
 * outlives a request that goes away while the task runs.  The thread side
 * only does the blocking call and stores its result in the task; "done"
 * runs back on the event loop.  A lane (below) bounds how much of one
 * concern's work is on the pools at once, and how much waits for it.
 */


#ifndef _NGX_FOKO_CHAT_TASK_H_INCLUDED_
#define _NGX_FOKO_CHAT_TASK_H_INCLUDED_


#include "ngx_foko_chat.h"


typedef struct ngx_foko_chat_task_s  ngx_foko_chat_task_t;

/* runs on a pool thread */
typedef void (*ngx_foko_chat_task_run_pt)(ngx_foko_chat_task_t *task,
    ngx_log_t *log);

/*
 * Runs on the event loop.  For a task attached to a request, task->request
 * is NULL if the request went away; otherwise the returned code finalizes
 * the request.  Detached tasks return NGX_OK.  A "done" that posts the
 * same task again for a next step returns NGX_AGAIN: the task stays
 * attached, and ngx_foko_chat_task_post() has marked it "again".
 */
typedef ngx_int_t (*ngx_foko_chat_task_done_pt)(ngx_foko_chat_task_t *task);


struct ngx_foko_chat_task_s {
    ngx_thread_task_t            thread_task;

    ngx_foko_chat_task_run_pt    run;
    ngx_foko_chat_task_done_pt   done;

    ngx_http_request_t          *request;
    ngx_http_cleanup_t          *cleanup;
    ngx_log_t                   *log;

    /* waiting for a thread in a concern's lane */
    ngx_queue_t                  queue;

    /* the task's own "done" while a concern's wrapper stands in for it */
    ngx_foko_chat_task_done_pt   saved_done;

    /* the size of data, wiped when the task is freed */
    size_t                       data_size;

    /* the task was never run: its thread pool refused it */
    unsigned                     failed:1;

    /* "done" posted or queued the task again for a next step */
    unsigned                     again:1;

    /* the concern's own inputs and results, freed with the task */
    void                        *data;
};


ngx_foko_chat_task_t *ngx_foko_chat_task_create(size_t data_size,
    ngx_log_t *log);
void ngx_foko_chat_task_free(ngx_foko_chat_task_t *task);
ngx_int_t ngx_foko_chat_task_post(ngx_foko_chat_task_t *task,
    ngx_thread_pool_t *tp);
ngx_int_t ngx_foko_chat_task_attach(ngx_foko_chat_task_t *task,
    ngx_http_request_t *r);
ngx_int_t ngx_foko_chat_task_post_request(ngx_foko_chat_task_t *task,
    ngx_thread_pool_t *tp, ngx_http_request_t *r);
void ngx_foko_chat_task_post_here(ngx_foko_chat_task_t *task);
void ngx_foko_chat_task_fail(ngx_foko_chat_task_t *task);
ngx_uint_t ngx_foko_chat_task_in_flight(void);


/*
 * A lane: how much of one concern's work a worker lets onto the thread
 * pools.  At most "limit" entries run at once; the others wait in order,
 * at most "max_waiting" of them (0: no bound of the lane's own), and one
 * more is refused.  An entry is the queue link of the concern's own
 * object (a task, a mail, a connection).
 *
 * "start" runs a waiting entry whose turn has come, with its slot taken:
 * NGX_OK if it holds the slot now, until it leaves the lane (which it
 * may do at once, a task that completes as failed); anything else gives
 * the slot back.
 *
 * A lane whose work waits on a database may pace it: the concern calls
 * ngx_foko_chat_lane_slower() when a call failed on the database (half as
 * many at once, at most once a second, down to a sixteenth of "limit")
 * and ngx_foko_chat_lane_faster() when one succeeded (one more, up to
 * "limit"; it takes effect at the next leave).  A slow database then
 * gets the calls it can answer within their bounds, instead of many that
 * all time out.
 */

typedef struct ngx_foko_chat_lane_s  ngx_foko_chat_lane_t;

typedef ngx_int_t (*ngx_foko_chat_lane_start_pt)(ngx_queue_t *entry);

struct ngx_foko_chat_lane_s {
    ngx_uint_t                    limit;        /* at once, now */
    ngx_uint_t                    most;         /* ... at most */
    ngx_msec_t                    slowed;       /* the last halving */
    ngx_uint_t                    max_waiting;
    ngx_foko_chat_lane_start_pt   start;

    ngx_uint_t                    running;
    ngx_uint_t                    waiting;
    ngx_queue_t                   queue;

    /* starting the waiting entries: a leave meanwhile only counts */
    unsigned                      starting:1;
};


void ngx_foko_chat_lane_init(ngx_foko_chat_lane_t *lane, ngx_uint_t limit,
    ngx_uint_t max_waiting, ngx_foko_chat_lane_start_pt start);
/* NGX_OK: the slot is taken, run it now; NGX_AGAIN: queued; NGX_DECLINED */
ngx_int_t ngx_foko_chat_lane_enter(ngx_foko_chat_lane_t *lane,
    ngx_queue_t *entry);
void ngx_foko_chat_lane_leave(ngx_foko_chat_lane_t *lane);
void ngx_foko_chat_lane_cancel(ngx_foko_chat_lane_t *lane,
    ngx_queue_t *entry);
ngx_int_t ngx_foko_chat_lane_slower(ngx_foko_chat_lane_t *lane);
void ngx_foko_chat_lane_faster(ngx_foko_chat_lane_t *lane);


#endif /* _NGX_FOKO_CHAT_TASK_H_INCLUDED_ */
